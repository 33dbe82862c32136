/**
 * Preparing a source for trigger capture (no logical decoding needed):
 * install the pgferry schema (sql/migrations/source/0001-trigger-capture.sql, src/migrations.ts), put the
 * capture triggers on the selected tables and take them off tables no
 * longer selected, and give this source name its starting tick. Idempotent;
 * one transaction, so a half-installed source cannot exist, and every table
 * starts being captured at the same instant. The first install takes a lock
 * on each table in turn: on a busy source it may meet a deadlock, which is
 * retried (run it at a quiet moment).
 */
import { installSchemaCapture } from '../schema-capture';
import type pg from 'pg';
import { relLabel } from '../../change';
import { isPrivilegeError, SourceError } from '../../errors';
import { escapeLiteral, qualified, withClient } from '../../pg';
import { migrate } from '../../migrations';
import { formatLsn } from '../../lsn';
import type { TableRef } from '../../tables';
import type { PreparedSource } from '../contract';
import { candidateTables, describeTables, selectTables, TableSelection } from '../tables';

export const TICK_LOCK = 7_364_201; // pg_advisory_xact_lock key serializing tick creation

/**
 * Tables with pgferry's capture trigger (trigger mode): the "publication". A partition's trigger
 * cloned from its root's is not its own: the partition is captured through the root (and
 * PostgreSQL refuses to drop a clone, which start-up did for every partition of a captured root).
 */
const CAPTURED_TABLES = `
SELECT DISTINCT n.nspname AS schemaname, c.relname AS tablename
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE t.tgname = 'pgferry_capture' AND NOT t.tgisinternal AND t.tgparentid = 0
ORDER BY 1, 2`;

/** pgferry's triggers present on the given tables: (schema, table, trigger, number of arguments). */
const INSTALLED_TRIGGERS = `
SELECT n.nspname AS schema_name, c.relname AS table_name, t.tgname AS trigger_name, t.tgnargs AS nargs
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE t.tgname IN ('pgferry_capture', 'pgferry_truncate', 'pgferry_wake') AND NOT t.tgisinternal AND t.tgparentid = 0
  AND (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))`;

interface InstalledTriggerRow {
  schema_name: string;
  table_name: string;
  trigger_name: string;
  nargs: string | number;
}

/** The tables with pgferry's capture trigger, in a stable order: trigger mode's "publication". */
export async function capturedTables(c: pg.ClientBase): Promise<{ schema: string; table: string }[]> {
  const { rows } = await c.query<{ schemaname: string; tablename: string }>(CAPTURED_TABLES);
  return rows.map((r) => ({ schema: r.schemaname, table: r.tablename }));
}

export async function prepareTriggerSource(url: string, source: string, selection: TableSelection): Promise<PreparedSource> {
  return withClient(`source '${source}'`, url, async (c) => {
    await c.query('BEGIN');
    try {
      const chosen = await selectTables(c, source, selection);
      const selected: { schema: string; table: string }[] = chosen ?? (await candidateTables(c));
      const tables = await describeTables(c, source, selected); // refuses uncarriable columns before installing anything
      const installed = (await c.query(`SELECT to_regclass('pgferry.events') IS NOT NULL AS yes`)).rows[0].yes;
      await migrate(c, 'source', { inTransaction: true });
      await installTriggers(c, tables, chosen === undefined);
      const state = await c.query('SELECT last_tick FROM pgferry.capture_state WHERE source = $1', [source]);
      // Like a new slot: capture starts here. (If the stream already holds changes, the log was lost: see prepareCapture.)
      let startsAt: string | undefined;
      if (!state.rows.length) {
        await c.query(`SELECT pg_catalog.pg_advisory_xact_lock(${TICK_LOCK})`);
        const tick = (await c.query('INSERT INTO pgferry.ticks (snap) VALUES (pg_catalog.pg_current_snapshot()) RETURNING tick_id::text')).rows[0].tick_id;
        await c.query('INSERT INTO pgferry.capture_state (source, last_tick) VALUES ($1, $2)', [source, tick]);
        startsAt = formatLsn(BigInt(tick) << 32n);
      }
      // No tables named, none excluded: tables created later are captured from their CREATE TABLE on
      // (the event trigger pgferry_capture_new_tables, sql/migrations/schema-capture/0002), as WAL
      // capture's FOR ALL TABLES publication does.
      await c.query('UPDATE pgferry.capture_state SET all_tables = $2 WHERE source = $1', [source, chosen === undefined]);
      await c.query('COMMIT');
      const warnings = await installSchemaCapture(c, source); // after the commit: without a superuser, capture runs on without it
      return { tables, warnings, slotCreated: startsAt !== undefined, slotLsn: startsAt, publicationCreated: !(installed === true || installed === 't') };
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      const e = err as { code?: string; message?: string };
      if (isPrivilegeError(err)) {
        throw new SourceError(`source '${source}': not allowed to install trigger capture (${e.message}); connect as the tables' owner with CREATE on the database`, { cause: err });
      }
      throw err;
    }
  });
}

async function installTriggers(c: pg.ClientBase, tables: TableRef[], allTables: boolean): Promise<void> {
  const wanted = new Set(tables.map((t) => relLabel(t)));
  const captured = await capturedTables(c);
  // Taking all tables, one created since `tables` was read has its triggers from its CREATE TABLE
  // (schema-capture/0002) and its rows may be in the log already: it is wanted. The candidates are
  // read after the captured tables, so every such table is among them.
  if (allTables) for (const t of await candidateTables(c)) wanted.add(relLabel(t));
  for (const t of captured) {
    if (!wanted.has(relLabel(t))) await dropTriggers(c, t); // no longer selected
  }
  // Only missing triggers are created: re-running on a busy source takes no table locks. Triggers of an
  // older pgferry (two arguments, no table oid) are made anew.
  const present = new Map<string, number>(
    (await c.query<InstalledTriggerRow>(INSTALLED_TRIGGERS, [tables.map((t) => t.schema), tables.map((t) => t.table)])).rows.map((r) => [
      JSON.stringify([r.schema_name, r.table_name, r.trigger_name]),
      Number(r.nargs),
    ]),
  );
  const missing = (t: TableRef, name: string, nargs: number) => (present.get(JSON.stringify([t.schema, t.table, name])) ?? -1) < nargs;
  for (const t of tables) {
    const rel = qualified(t.schema, t.table);
    const oid = (await c.query('SELECT $1::regclass::oid::text AS oid', [rel])).rows[0].oid as string;
    // The table's oid travels with every event: a renamed table is followed, a dropped one noticed.
    const args = `${escapeLiteral(t.schema)}, ${escapeLiteral(t.table)}, ${escapeLiteral(oid)}`;
    for (const name of ['pgferry_capture', 'pgferry_truncate']) {
      if (present.has(JSON.stringify([t.schema, t.table, name])) && missing(t, name, 3)) await c.query(`DROP TRIGGER ${name} ON ${rel}`);
    }
    if (missing(t, 'pgferry_capture', 3)) {
      await c.query(`CREATE TRIGGER pgferry_capture AFTER INSERT OR UPDATE OR DELETE ON ${rel} FOR EACH ROW EXECUTE FUNCTION pgferry.capture_row(${args})`);
    }
    if (missing(t, 'pgferry_truncate', 3)) {
      await c.query(`CREATE TRIGGER pgferry_truncate AFTER TRUNCATE ON ${rel} FOR EACH STATEMENT EXECUTE FUNCTION pgferry.capture_truncate(${args})`);
    }
    if (missing(t, 'pgferry_wake', 0)) {
      await c.query(`CREATE TRIGGER pgferry_wake AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${rel} FOR EACH STATEMENT EXECUTE FUNCTION pgferry.wake()`);
    }
  }
}

export async function dropTriggers(c: pg.ClientBase, t: { schema: string; table: string }): Promise<void> {
  const rel = qualified(t.schema, t.table);
  for (const name of ['pgferry_capture', 'pgferry_truncate', 'pgferry_wake']) await c.query(`DROP TRIGGER IF EXISTS ${name} ON ${rel}`);
}
