/**
 * Schema changes, both capture modes: the event trigger that describes each
 * change to a captured table in its transaction (sql/migrations/schema-capture):
 * a logical message for WAL capture (the assembler turns it into a `schema`
 * change), an event 'S' in pgferry.events for trigger capture (read by
 * trigger/events.ts). Installed at start-up, removed by uninstall.
 *
 * Creating an event trigger needs a superuser. Without one, capture still
 * runs and start-up says, once, that schema changes must then be applied to
 * replicas by hand, and what enables them.
 */
import type pg from 'pg';
import type { PartitionChange, PartitionKey, SchemaChange, TableShape } from '../change';
import { describeCause, isPrivilegeError, ProtocolError } from '../errors';
import { migrate } from '../migrations';
import { publicationName } from '../names';

/** The shape of every captured table that has none recorded yet (published, or with trigger capture, before the event trigger or since). */
const RECORD_SHAPES = `
INSERT INTO pgferry.table_shapes (relid, shape)
SELECT c.oid, pgferry.table_shape(c.oid)
FROM pg_catalog.pg_publication_tables pt
JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
WHERE pt.pubname = $1 AND n.nspname <> 'pgferry'
UNION
SELECT t.tgrelid, pgferry.table_shape(t.tgrelid) FROM pg_catalog.pg_trigger t WHERE t.tgname = 'pgferry_capture' AND NOT t.tgisinternal
ON CONFLICT (relid) DO NOTHING`;

/** pgferry's event triggers (sql/migrations/schema-capture): schema changes, and trigger capture's tables created later. */
const EVENT_TRIGGERS = [
  'pgferry_schema_changes',
  'pgferry_capture_new_tables',
  'pgferry_capture_attach_start',
  'pgferry_capture_attach_end',
  'pgferry_schema_partitions',
  'pgferry_schema_drops',
];

/** Install (or update) the event triggers and record the published tables' shapes; returns warnings for people. */
export async function installSchemaCapture(c: pg.ClientBase, source: string): Promise<string[]> {
  const warnings: string[] = [];
  // Installed once (migrations), but a DBA may have dropped one since: then all are made again, in order (each file is idempotent).
  const present = new Set((await c.query(`SELECT evtname::text AS name FROM pg_catalog.pg_event_trigger WHERE evtname = ANY($1::text[])`, [EVENT_TRIGGERS])).rows.map((r) => r.name as string));
  try {
    await c.query('BEGIN');
    try {
      const recorded = (await c.query(`SELECT to_regclass('pgferry.migrations') IS NOT NULL AS yes`)).rows[0].yes;
      if (present.size < EVENT_TRIGGERS.length && (recorded === true || recorded === 't')) {
        await c.query(`DELETE FROM pgferry.migrations WHERE name LIKE 'schema-capture/%'`);
      }
      await migrate(c, 'schema-capture', { inTransaction: true });
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      // An install a superuser made earlier keeps capturing schema changes; only what is newer waits for one.
      if (!isPrivilegeError(err) || !present.has('pgferry_schema_changes')) throw err;
      warnings.push(
        `source '${source}': pgferry's event triggers could not be brought up to date: that needs a superuser (${describeCause(err)}); ` +
          `schema changes are still captured as before, but with trigger capture of all tables a table created later is not captured until it is added ` +
          `(pgferry table add). To update them, run pgferry up once as a superuser`,
      );
    }
    await c.query('GRANT SELECT ON pgferry.schema_capture_key TO CURRENT_USER');
    await c.query(RECORD_SHAPES, [publicationName(source)]);
    warnings.push(...(await recordPartitions(c, source)));
    return warnings;
  } catch (err) {
    if (!isPrivilegeError(err)) throw err;
    return [
      `source '${source}': schema changes are not captured: installing the event trigger pgferry_schema_changes needs a superuser (${describeCause(err)}); ` +
        `until it is installed, apply each ALTER TABLE to the replicas by hand before the rows that need it, as with native logical replication. ` +
        `To capture them, run pgferry up once as a superuser`,
    ];
  }
}

/**
 * Record the partitions of captured partitioned tables that have none
 * recorded yet, and put the TRUNCATE trigger that describes a partition's
 * TRUNCATE on each (schema-capture/0004). That needs ownership of the
 * partitions: without it, start-up says which change is not carried.
 */
async function recordPartitions(c: pg.ClientBase, source: string): Promise<string[]> {
  const { rows } = await c.query(`SELECT to_regprocedure('pgferry.record_partitions()') IS NOT NULL AS yes`);
  if (!(rows[0].yes === true || rows[0].yes === 't')) return [];
  try {
    await c.query('SELECT pgferry.record_partitions()');
    return [];
  } catch (err) {
    if (!isPrivilegeError(err)) throw err;
    return [
      `source '${source}': partition maintenance of partitioned tables is not captured: recording their partitions needs a superuser or their owner (${describeCause(err)}); ` +
        `a partition truncated, detached or dropped until then is not carried to replicas. Run pgferry up once as a superuser`,
    ];
  }
}

/** Whether the source's schema changes reach the stream (the event trigger is there and enabled). */
export async function capturesSchemaChanges(c: pg.ClientBase): Promise<boolean> {
  const { rows } = await c.query(`SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'pgferry_schema_changes' AND evtenabled <> 'D'`);
  return rows.length > 0;
}

/** Remove the event trigger and its functions (the pgferry schema itself goes with trigger capture's uninstall). */
export async function uninstallSchemaCapture(c: pg.ClientBase): Promise<string[]> {
  const { rows } = await c.query(`SELECT evtname::text AS name FROM pg_catalog.pg_event_trigger WHERE evtname = ANY($1::text[]) ORDER BY 1 DESC`, [EVENT_TRIGGERS]);
  if (!rows.length) return [];
  for (const name of EVENT_TRIGGERS) await c.query(`DROP EVENT TRIGGER IF EXISTS ${name}`);
  await c.query(
    // CASCADE: the partitions' TRUNCATE triggers (pgferry_partition_truncate) go with their function.
    'DROP FUNCTION IF EXISTS pgferry.capture_partition_truncate() CASCADE',
  );
  await c.query(
    'DROP FUNCTION IF EXISTS pgferry.capture_partition_changes(), pgferry.capture_drops(), pgferry.record_partitions(), pgferry.reconcile_partitions(oid, oid), ' +
      'pgferry.emit_partition_change(oid, text, jsonb), pgferry.emit_partition_error(oid, text, text), pgferry.emit_root_change(oid, text, jsonb), pgferry.emit_schema_change(oid, text, text, text[], boolean, jsonb), pgferry.trigger_captured(oid), ' +
      'pgferry.add_partition_truncate_trigger(oid), pgferry.partition_info(oid), pgferry.partition_key(oid), pgferry.trigger_capture_takes_all_tables()',
  );
  await c.query(
    'DROP FUNCTION IF EXISTS pgferry.capture_schema_change(), pgferry.capture_new_tables(), pgferry.before_attach(), pgferry.after_attach(), ' +
      'pgferry.add_capture_row_trigger(oid), pgferry.carriable_columns(oid), pgferry.table_shape(oid), pgferry.publications_of(oid)',
  );
  await c.query('DROP TABLE IF EXISTS pgferry.table_shapes, pgferry.schema_capture_key, pgferry.new_tables, pgferry.partitions, pgferry.partition_roots');
  await c.query(`DELETE FROM pgferry.migrations WHERE name LIKE 'schema-capture/%'`);
  const what = (name: string) =>
    name === 'pgferry_schema_changes' ? 'schema-change capture' : name === 'pgferry_schema_partitions' ? 'partition maintenance capture' : name === 'pgferry_schema_drops' ? 'DROP TABLE capture' : 'trigger capture of tables created later';
  return rows.map((r) => `event trigger ${r.name} (${what(r.name)})`);
}

/** Prefix of the logical messages the source's event trigger emits (sql/migrations/schema-capture). */
export const SCHEMA_PREFIX = 'pgferry.schema';

interface RawShape {
  schema: string;
  table: string;
  columns: { num: number; name: string; type: string; notNull: boolean; key: boolean; generated: boolean }[];
}

/** The key the source's event trigger signs its descriptions with (null: pgferry's role may not read it, or it is not installed). */
export async function schemaCaptureKey(c: pg.ClientBase): Promise<string | null> {
  try {
    return (await c.query(`SELECT key FROM pgferry.schema_capture_key LIMIT 1`)).rows[0]?.key ?? null;
  } catch {
    return null;
  }
}

/**
 * The event trigger's description of a schema change, and the pgferry
 * publications that send the table (none for trigger capture). A message
 * without the source's key (`key`: what capture read at start) was not
 * written by pgferry's event trigger — any role may emit a logical message —
 * and is turned into a change replicas refuse to apply, loudly.
 */
export function parseSchemaChange(text: string, key: string | null): { change: SchemaChange; publications: string[] } {
  let p: {
    oid: unknown;
    command: string;
    old: RawShape | null;
    new: RawShape | null;
    fills?: Record<string, string | null>;
    unfilled?: string[];
    publications?: string[] | null;
    error?: string;
    key?: string;
    partition?: PartitionChange;
  };
  try {
    p = JSON.parse(text);
  } catch (err) {
    throw new ProtocolError(`a schema-change message from the source is not valid JSON (${(err as Error).message}); the event trigger pgferry_schema_changes is not pgferry's`, { cause: err });
  }
  const shape = (s: RawShape | null): TableShape | null =>
    s && {
      schema: s.schema,
      table: s.table,
      columns: s.columns.map((c) => ({ num: Number(c.num), name: c.name, type: c.type, notNull: c.notNull === true, key: c.key === true, generated: c.generated === true })),
    };
  const out: SchemaChange = { op: 'schema', oid: Number(p.oid), command: p.command, before: shape(p.old), after: shape(p.new), fills: p.fills ?? {}, unfilled: p.unfilled ?? [] };
  if (p.error) out.error = p.error;
  if (p.partition) out.partition = partitionOf(p.partition);
  if (key === null || p.key !== key) {
    out.error = key === null ? "pgferry's capture role may not read pgferry.schema_capture_key, so it cannot tell the event trigger's messages from forged ones (GRANT SELECT ON pgferry.schema_capture_key to it)" : 'the message does not carry the key of pgferry_schema_changes: it was not written by pgferry (any role may emit logical messages)';
    out.before = out.after = null;
  }
  return { change: out, publications: p.publications ?? [] };
}

/** A partition change as the event trigger wrote it (schema-capture/0004), checked field by field. */
function partitionOf(raw: PartitionChange): PartitionChange {
  const ACTIONS = ['create', 'attach', 'detach', 'drop', 'truncate'];
  const key = (k: PartitionKey | null | undefined): PartitionKey | null =>
    k && ['r', 'l', 'h'].includes(k.strategy) ? { strategy: k.strategy, keys: Array.isArray(k.keys) ? k.keys.map(String) : null } : null;
  if (!raw || !ACTIONS.includes(raw.action) || typeof raw.schema !== 'string' || typeof raw.table !== 'string') {
    throw new ProtocolError(`a partition change from the source is not { action, schema, table, … }: ${JSON.stringify(raw)}`);
  }
  const out: PartitionChange = {
    action: raw.action,
    schema: raw.schema,
    table: raw.table,
    parent: raw.parent && typeof raw.parent.schema === 'string' ? { schema: raw.parent.schema, table: String(raw.parent.table) } : null,
    chain: (Array.isArray(raw.chain) ? raw.chain : []).map((b) => ({ ...(key(b) ?? { strategy: 'r' as const, keys: null }), bound: String(b.bound) })),
    partitionKey: key(raw.partitionKey),
  };
  if (raw.hasRows !== undefined) out.hasRows = raw.hasRows === true;
  if (raw.captured !== undefined) out.captured = raw.captured === true;
  return out;
}
