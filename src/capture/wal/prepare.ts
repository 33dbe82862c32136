/**
 * Preparing a source for WAL capture: check prerequisites, create the
 * publication (before the slot, so the slot's first change is covered by it)
 * and the logical replication slot. Idempotent.
 */
import type pg from 'pg';
import { ConfigError, describeCause, isDuplicateObject, isPrivilegeError, SourceError } from '../../errors';
import { publicationName, slotName } from '../../names';
import { escapeLiteral, ident, qualified, withClient } from '../../pg';
import { nameLabel, relLabel } from '../../change';
import { parseTableName } from '../../config';

import type { TableRef } from '../../tables';
import type { PreparedSource } from '../contract';
import { describeTables, selectTables, TableSelection } from '../tables';
import { installSchemaCapture } from '../schema-capture';

/**
 * Tables the publication sends, in a stable order, with its column list
 * (attnames: every column when it has none) and row filter; pgferry's own
 * tables (a FOR ALL TABLES publication sends them too) are bookkeeping.
 */
const PUBLISHED_TABLES = `
SELECT schemaname, tablename, pg_catalog.array_to_json(attnames)::text AS attnames, rowfilter FROM pg_catalog.pg_publication_tables
WHERE pubname = $1 AND schemaname <> 'pgferry' ORDER BY schemaname, tablename`;

/**
 * Published tables on which the source refuses UPDATE and DELETE: replica
 * identity NOTHING, or DEFAULT without a primary key — a DEFERRABLE one does
 * not count: PostgreSQL never takes a deferrable key as the replica identity.
 * pgferry's own tables (a FOR ALL TABLES publication has them too) are
 * insert-only and never replicated: not the user's to fix.
 */
const IDENTITY_PROBLEMS = `
SELECT n.nspname AS schema_name, c.relname AS table_name, c.relreplident::text AS identity,
       EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary AND NOT i.indimmediate) AS deferrable_key
FROM pg_catalog.pg_publication_tables pt
JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
WHERE pt.pubname = $1 AND pt.schemaname <> 'pgferry'
  AND (c.relreplident = 'n'
       OR (c.relreplident = 'd' AND NOT EXISTS (
             SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary AND i.indimmediate)))
ORDER BY 1, 2`;

/** The replication slot $1 as pg_replication_slots has it, with the WAL it keeps (no row: no such slot). */
const SLOT = `
SELECT slot_name, plugin, active, active_pid, confirmed_flush_lsn::text AS confirmed_flush_lsn,
       restart_lsn::text AS restart_lsn, wal_status,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes
FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`;

/** A row of pg_replication_slots (values as pgferry's connections read them: text). */
export interface SlotRow {
  slot_name: string;
  plugin: string;
  active: boolean | string;
  active_pid: string | number | null;
  confirmed_flush_lsn: string | null;
  restart_lsn: string | null;
  /** reserved, extended, unreserved or lost. */
  wal_status: string | null;
  /** pg_current_wal_lsn() - restart_lsn. */
  retained_bytes: string | number | null;
}

/** The replication slot named `slot`, or undefined when there is none. */
export async function readSlot(c: pg.ClientBase, slot: string): Promise<SlotRow | undefined> {
  return (await c.query<SlotRow>(SLOT, [slot])).rows[0];
}

interface PublishedRow {
  schemaname: string;
  tablename: string;
  /** JSON text of the list (arrays arrive as text on pgferry's connections). */
  attnames: string | null;
  rowfilter: string | null;
}

/** The tables publication `pub` sends, in a stable order, with the columns (null: all) and rows (null: all) it sends of each. */
async function publicationTables(c: pg.ClientBase, pub: string): Promise<{ schema: string; table: string; columns: string[] | null; rowFilter: string | null }[]> {
  const { rows } = await c.query<PublishedRow>(PUBLISHED_TABLES, [pub]);
  return rows.map((r) => ({ schema: r.schemaname, table: r.tablename, columns: r.attnames === null ? null : (JSON.parse(r.attnames) as string[]), rowFilter: r.rowfilter }));
}

export async function checkWalLevel(c: pg.Client, source: string): Promise<void> {
  const { rows } = await c.query('SHOW wal_level');
  if (rows[0].wal_level !== 'logical') {
    throw new SourceError(
      `source '${source}': wal_level is '${rows[0].wal_level}', WAL capture needs 'logical'; run ALTER SYSTEM SET wal_level = logical and restart PostgreSQL`,
    );
  }
}

export async function prepareSource(url: string, source: string, selection: TableSelection): Promise<PreparedSource> {
  return withClient(`source '${source}'`, url, async (c) => {
    await checkWalLevel(c, source);
    const pub = publicationName(source);
    const tables = await selectTables(c, source, selection);
    const entries = tables && (await publicationEntries(c, source, tables, selection.publish));
    const list = entries?.join(', ');
    // The column lists and row filters pgferry set last (its comment on the publication), to change them only when the config does.
    const wantedSpec = selection.publish && Object.keys(selection.publish).length ? `${SPEC_MARK}${list}` : null;
    const exists = (
      await c.query(`SELECT puballtables, pubviaroot, pg_catalog.obj_description(oid, 'pg_publication') AS spec FROM pg_catalog.pg_publication WHERE pubname = $1`, [pub])
    ).rows[0];
    const setSpec = async () => c.query(`COMMENT ON PUBLICATION ${ident(pub)} IS ${wantedSpec === null ? 'NULL' : escapeLiteral(wantedSpec)}`);
    let publicationCreated = false;
    const early: string[] = [];
    // Catalog booleans arrive as text ('t'/'f') on pgferry's connections.
    const flag = (v: unknown) => v === true || v === 't';
    try {
      // Partitioned tables are published as their root, so a replica may partition them differently, or not at all.
      if (!exists) {
        await c.query(`CREATE PUBLICATION ${ident(pub)} ${list ? `FOR TABLE ${list}` : 'FOR ALL TABLES'} WITH (publish_via_partition_root = true)`);
        if (wantedSpec !== null) await setSpec();
        publicationCreated = true;
      } else if (tables && !flag(exists.puballtables)) {
        // Only when the table set (or the config's column lists and row filters) differs: a publication
        // made by the DBA stays untouched (and needs no ownership).
        const key = (t: { schema: string; table: string }) => JSON.stringify([t.schema, t.table]);
        const current = (await publicationTables(c, pub)).map(key).sort();
        const wanted = tables.map(key).sort();
        const specNow = typeof exists.spec === 'string' && exists.spec.startsWith(SPEC_MARK) ? exists.spec : null;
        if (JSON.stringify(current) !== JSON.stringify(wanted) || specNow !== wantedSpec) {
          await c.query(`ALTER PUBLICATION ${ident(pub)} SET TABLE ${list}`);
          if (specNow !== wantedSpec) await setSpec();
        }
      }
    } catch (err) {
      throw privilegeError(source, exists ? 'change the tables of its publication' : 'create its publication', err);
    }
    if (exists && !flag(exists.pubviaroot)) {
      try {
        await c.query(`ALTER PUBLICATION ${ident(pub)} SET (publish_via_partition_root = true)`);
      } catch (err) {
        early.push(
          `source '${source}': publication ${pub} does not publish partitions through their root table and pgferry may not change it (${describeCause(err)}); ` +
            `if you replicate partitioned tables, run ALTER PUBLICATION ${ident(pub)} SET (publish_via_partition_root = true) as its owner`,
        );
      }
    }
    early.push(...(await installSchemaCapture(c, source)));
    // Refuse uncarriable columns before the slot exists: a slot left behind would hold WAL on the source.
    const published = await publishedTables(c, source, pub);
    let slotCreated = false;
    let slotLsn: string | undefined;
    const slot = slotName(source);
    const existing = await readSlot(c, slot);
    if (existing?.wal_status === 'lost') {
      // Invalidated (max_slot_wal_keep_size): it can never stream again. Drop it and create it anew
      // like a dropped slot: the caller then marks the gap, so replicas stop in needs_resync.
      try {
        await c.query('SELECT pg_catalog.pg_drop_replication_slot($1)', [slot]);
      } catch (err) {
        throw privilegeError(source, `drop its invalidated replication slot ${slot}`, err);
      }
    }
    if (!existing || existing.wal_status === 'lost') {
      try {
        slotLsn = (await c.query(`SELECT lsn::text AS lsn FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')`, [slot])).rows[0].lsn;
        slotCreated = true;
      } catch (err) {
        if (!isDuplicateObject(err)) throw privilegeError(source, 'create its replication slot', err); // created concurrently
      }
    }
    const warnings = (await c.query<{ schema_name: string; table_name: string; identity: string; deferrable_key: boolean | string }>(IDENTITY_PROBLEMS, [pub])).rows.map((r) => {
      const name = relLabel({ schema: r.schema_name, table: r.table_name });
      const why =
        r.identity === 'n'
          ? 'has REPLICA IDENTITY NOTHING'
          : r.deferrable_key === true || r.deferrable_key === 't'
            ? 'has only a DEFERRABLE primary key, which PostgreSQL does not take as a replica identity'
            : 'has no primary key or replica identity';
      return `source '${source}': table ${name} ${why}, so PostgreSQL refuses UPDATE and DELETE on it while it is replicated; run ALTER TABLE ${name} REPLICA IDENTITY FULL, or add a primary key`;
    });
    return { tables: published, warnings: [...early, ...warnings], slotCreated, slotLsn, publicationCreated };
  });
}

/**
 * The published tables with their columns. A column whose type cannot be
 * carried stops start-up with its name: replicating it would fail or mangle
 * every row of its table.
 */
export async function publishedTables(c: pg.ClientBase, source: string, pub: string): Promise<TableRef[]> {
  const published = await publicationTables(c, pub);
  const described = await describeTables(c, source, published);
  // A publication's column list and row filter (PostgreSQL 15+) bound what every part of pgferry sees:
  // the stream, snapshots, resyncs, replica checks and verify. An excluded column is never read.
  return described.map((t, i) => {
    const p = published[i];
    const only = p.columns ? new Set(p.columns) : null;
    const out: TableRef = { ...t, columns: only ? t.columns?.filter((col) => only.has(col.name)) : t.columns };
    if (p.rowFilter) out.rowFilter = p.rowFilter;
    return out;
  });
}

/** How pgferry marks a publication whose column lists and row filters it set from the config. */
const SPEC_MARK = 'pgferry publish: ';

/** Each table's key columns (primary key, or the replica identity index): a column list must keep them. */
const KEY_COLUMNS = `
SELECT w.ord, coalesce(pg_catalog.array_to_json(array_agg(a.attname::text ORDER BY a.attnum)), '[]')::text AS cols
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(schema_name, table_name, ord)
JOIN pg_catalog.pg_namespace n ON n.nspname = w.schema_name
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.table_name
LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND (CASE WHEN c.relreplident = 'i' THEN i.indisreplident ELSE i.indisprimary END)
LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey)
GROUP BY w.ord ORDER BY w.ord`;

/**
 * The publication's table list: each table, with the column list and row
 * filter the config gives it (sources[].publish). A column list must keep the
 * table's key, or PostgreSQL refuses every UPDATE and DELETE of the table on
 * the source; a row filter's SQL is the operator's own, given in the config.
 */
async function publicationEntries(c: pg.ClientBase, source: string, tables: TableRef[], publish: TableSelection['publish']): Promise<string[]> {
  const specs = new Map(Object.entries(publish ?? {}).map(([name, spec]) => [JSON.stringify(parseTableName(name)), { name, spec }]));
  const keys = (await c.query<{ cols: string }>(KEY_COLUMNS, [tables.map((t) => t.schema), tables.map((t) => t.table)])).rows.map((r) => JSON.parse(r.cols) as (string | null)[]);
  const out = tables.map((t, i) => {
    const found = specs.get(JSON.stringify({ schema: t.schema, table: t.table }));
    if (!found) return qualified(t.schema, t.table);
    specs.delete(JSON.stringify({ schema: t.schema, table: t.table }));
    const { columns, rows } = found.spec;
    if (columns) {
      const lost = keys[i].filter((k): k is string => k !== null && !columns.includes(k));
      if (lost.length) {
        throw new ConfigError(
          `sources[].publish.${found.name}.columns leaves out key column ${lost.map(nameLabel).join(', ')} of ${relLabel(t)}; PostgreSQL would then refuse every UPDATE and DELETE of the table on the source: list ${lost.length > 1 ? 'them' : 'it'} too`,
        );
      }
    }
    return `${qualified(t.schema, t.table)}${columns ? ` (${columns.map((col) => ident(col)).join(', ')})` : ''}${rows ? ` WHERE (${rows})` : ''}`;
  });
  for (const { name } of specs.values()) throw new ConfigError(`sources[].publish.${name}: no such table among the source's tables; publish names a table of sources[].tables`);
  return out;
}

function privilegeError(source: string, what: string, err: unknown): Error {
  const e = err as { code?: string; message?: string };
  if (isPrivilegeError(err)) {
    return new SourceError(
      `source '${source}': not allowed to ${what} (${e.message}); connect as a role with REPLICATION and ownership of the tables (FOR ALL TABLES needs a superuser: pass --tables)`,
      { cause: err },
    );
  }
  return err as Error;
}

export interface SlotInfo {
  slot: string;
  exists: boolean;
  active?: boolean;
  confirmedFlushLsn?: string | null;
  restartLsn?: string | null;
  walStatus?: string | null;
  retainedBytes?: number;
}

export async function slotInfo(c: pg.Client, source: string): Promise<SlotInfo> {
  const slot = slotName(source);
  const r = await readSlot(c, slot);
  if (!r) return { slot, exists: false };
  return {
    slot,
    exists: true,
    active: r.active === 't' || r.active === true,
    confirmedFlushLsn: r.confirmed_flush_lsn,
    restartLsn: r.restart_lsn,
    walStatus: r.wal_status,
    retainedBytes: Number(r.retained_bytes),
  };
}
