/**
 * Which tables a replica takes, and from where: its rows in
 * pgferry.replica_tables (sql/migrations/target/0002-table-registry.sql),
 * the only module that reads or writes them and pgferry.table_pending.
 *
 * The registry lives in the replica and is read by every batch inside the
 * batch's transaction, after the checkpoint row is locked. So a table joins
 * or leaves a running pipeline at a batch boundary (`pgferry table add`,
 * `pgferry table remove`: src/snapshot/join.ts), with no restart and no
 * worker holding a stale list: whatever changes the registry locks the
 * checkpoint row first, as a batch does.
 *
 * A joining table (state `copying`) is copied from a snapshot at position S
 * into a shadow table while the others stream. Its changes in transactions
 * after S are not applied yet (the copy is not in place) but kept in
 * pgferry.table_pending, in the same transaction as the checkpoint, so each
 * is kept exactly once; changes at or before S are in the snapshot and
 * skipped. The swap (one transaction, checkpoint locked) puts the copy in
 * place, replays what was kept, and makes the table `ready` from S.
 *
 * `route` is the pure decision, property-tested against a model in
 * test/unit/table-registry.property.test.ts.
 */
import type pg from 'pg';
import { perRelation, type Change, type TxnMessage } from '../change';
import { compareLsn, ZERO_LSN } from '../lsn';
import { decodeMessage, encodeMessage } from '../changelog/wire';
import { ConfigError } from '../errors';

type Queryable = Pick<pg.ClientBase, 'query'>;

export type TableState = 'ready' | 'copying' | 'removed';

export interface TableEntry {
  state: TableState;
  /** Changes of transactions at or before this position are not applied (the snapshot holds them). */
  from: string;
}

export interface RegisteredTable extends TableEntry {
  schema: string;
  table: string;
  updatedAt?: string;
}

/** A table's key in the registry: schema and name exactly, whatever characters they hold. */
export function tableKey(schema: string, table: string): string {
  return JSON.stringify([schema, table]);
}

/** A described table's key in the registry (asked for every chunk applied: kept per description). */
const keyOfRelation = perRelation((r) => tableKey(r.schema, r.table));

/**
 * What a replica does with the changes of each table. Without a registry
 * (a replica not prepared by this version: `entries` null) the configured
 * `tables` filter decides, as before the registry existed.
 */
export interface TableGate {
  entries: Map<string, TableEntry> | null;
  /**
   * The replica's configured tables ("schema.table"; all when undefined).
   * Without a registry they decide, as before it existed; with one, only
   * whether a table created on the source joins (the registry decides the
   * rest: a worker's configuration may be older than the last table add).
   */
  legacy?: ReadonlySet<string>;
  /** A table created on the source (CREATE TABLE in a FOR ALL TABLES publication) joins this replica: it takes every table. */
  takesNewTables: boolean;
}

export type Decision = 'apply' | 'pend' | 'skip' | 'unknown';

/** What `route` makes of one chunk. */
export interface Routed {
  /** The changes to apply now (null: none). */
  apply: TxnMessage | null;
  /**
   * The changes of joining tables to keep until their copy is swapped in: one
   * message, in the chunk's own order (tables joined together keep their
   * relative order), and the tables it holds changes of (keys).
   */
  pend: { keys: string[]; m: TxnMessage } | null;
  /** Tables the chunk changes that this replica has never taken (keys). */
  unknown: string[];
  /** The registry as the chunk leaves it: a table created, renamed or moved by a schema change it applies or keeps is followed at once. */
  entries: Map<string, TableEntry> | null;
}

export function decide(gate: TableGate, lsn: string, schema: string, table: string, created = false, key = tableKey(schema, table)): Decision {
  const configured = !gate.legacy || gate.legacy.has(`${schema}.${table}`);
  if (!gate.entries) return configured ? 'apply' : 'skip';
  const e = gate.entries.get(key);
  // A table created on the source joins a replica that takes every table, or lists it by name.
  if (!e) return created && (gate.takesNewTables || gate.legacy?.has(`${schema}.${table}`)) ? 'apply' : 'unknown';
  if (e.state === 'removed' || compareLsn(lsn, e.from) <= 0) return 'skip';
  return e.state === 'ready' ? 'apply' : 'pend';
}

/** A schema change's decision: by the table it names before the change (or after, for a table new to pgferry). */
function decideSchema(gate: TableGate, lsn: string, ch: Extract<Change, { op: 'schema' }>): { d: Decision; key: string } | null {
  const t = ch.before ?? ch.after;
  if (!t) return null; // describes nothing: no table to change
  const key = tableKey(t.schema, t.table);
  if (!gate.entries) {
    // Without a registry, as before it: a change naming a configured table before or after it.
    const named = [ch.before, ch.after].some((x) => x && (!gate.legacy || gate.legacy.has(`${x.schema}.${x.table}`)));
    return { d: named ? 'apply' : 'skip', key };
  }
  return { d: decide(gate, lsn, t.schema, t.table, ch.before === null), key };
}

/**
 * Split one chunk into what is applied now, what is kept for a joining table,
 * and what is left out, change by change: a table a schema change creates or
 * renames is followed for the rows after it in the same chunk.
 */
export function route(gate: TableGate, m: TxnMessage): Routed {
  let g = gate;
  const apply: Change[] = [];
  const pend: Change[] = [];
  const pendKeys = new Set<string>();
  const unknown = new Set<string>();
  /** A truncate lost some of its tables here (the count of changes alone would not show it). */
  let trimmed = false;
  const put = (d: Decision, key: string, ch: Change) => {
    if (d === 'apply') apply.push(ch);
    else if (d === 'pend') {
      pend.push(ch);
      pendKeys.add(key);
    } else if (d === 'unknown') unknown.add(key);
  };
  const of = (relKey: string) => m.relations[relKey];
  /** Decisions for the rows of each relation key, while `g` stays as it is. */
  const decided = new Map<string, { d: Decision; key: string }>();
  for (const ch of m.changes) {
    if (ch.op === 'schema') {
      const r = decideSchema(g, m.lsn, ch);
      if (!r) continue;
      put(r.d, r.key, ch);
      // A joining table renamed during its copy is followed too: its rows under the new name are kept, not unknown.
      if ((r.d === 'apply' || r.d === 'pend') && g.entries && ch.after) {
        g = { ...g, entries: followed(g.entries, ch, g.takesNewTables) };
        decided.clear();
      }
    } else if (ch.op === 'truncate') {
      const now: string[] = [];
      const later: string[] = [];
      for (const relKey of ch.rels) {
        const r = of(relKey);
        if (!r) continue;
        const d = decide(g, m.lsn, r.schema, r.table);
        if (d === 'apply') now.push(relKey);
        else if (d === 'pend') {
          later.push(relKey);
          pendKeys.add(tableKey(r.schema, r.table));
        } else if (d === 'unknown') unknown.add(tableKey(r.schema, r.table));
      }
      if (now.length === ch.rels.length) apply.push(ch);
      else {
        trimmed = true;
        if (now.length) apply.push({ ...ch, rels: now });
      }
      if (later.length) pend.push({ ...ch, rels: later });
    } else {
      const r = of(ch.rel);
      if (!r) {
        apply.push(ch); // undescribed: the applier names the broken message
        continue;
      }
      // One decision per table and registry state in a chunk (not per row: this runs for every change applied).
      let known = decided.get(ch.rel);
      if (!known) {
        const key = keyOfRelation(r);
        decided.set(ch.rel, (known = { d: decide(g, m.lsn, r.schema, r.table, false, key), key }));
      }
      put(known.d, known.key, ch);
    }
  }
  return {
    apply: !trimmed && apply.length === m.changes.length ? m : apply.length ? { ...m, changes: apply } : null,
    pend: pend.length ? { keys: [...pendKeys], m: { ...m, changes: pend } } : null,
    unknown: [...unknown],
    entries: g.entries,
  };
}

/** The registry after an applied schema change: a created table joins from its first row, a renamed one keeps its entry under the new name. */
function followed(entries: Map<string, TableEntry>, ch: Extract<Change, { op: 'schema' }>, takesNewTables: boolean): Map<string, TableEntry> {
  if (ch.partition) {
    // A detached partition becomes a table of its own: a replica that takes every table takes it from here.
    const p = tableKey(ch.partition.schema, ch.partition.table);
    return ch.partition.action === 'detach' && takesNewTables && !entries.has(p) ? new Map(entries).set(p, { state: 'ready', from: ZERO_LSN }) : entries;
  }
  const after = tableKey(ch.after!.schema, ch.after!.table);
  if (!ch.before) {
    if (entries.has(after)) return entries;
    return new Map(entries).set(after, { state: 'ready', from: ZERO_LSN });
  }
  const before = tableKey(ch.before.schema, ch.before.table);
  const entry = entries.get(before);
  if (before === after || !entry) return entries;
  const next = new Map(entries);
  next.delete(before);
  return next.set(after, entry);
}

const LOAD = `
SELECT schema_name, table_name, state, from_lsn::text AS from_lsn, updated_at::text AS updated_at
FROM pgferry.replica_tables WHERE replica = $1 ORDER BY schema_name, table_name`;

const UPSERT = `
INSERT INTO pgferry.replica_tables (replica, schema_name, table_name, state, from_lsn)
SELECT $1, s, t, $4, $5::pg_lsn FROM unnest($2::text[], $3::text[]) AS w(s, t)
ON CONFLICT (replica, schema_name, table_name) DO UPDATE SET state = EXCLUDED.state, from_lsn = EXCLUDED.from_lsn, updated_at = now()`;

const INSERT_NEW = `
INSERT INTO pgferry.replica_tables (replica, schema_name, table_name, state, from_lsn)
SELECT $1, s, t, $4, $5::pg_lsn FROM unnest($2::text[], $3::text[]) AS w(s, t)
ON CONFLICT (replica, schema_name, table_name) DO NOTHING`;

/** An entry left under the new name (a table removed, or dropped, long ago) gives way to the renamed table's. */
const RENAME_STALE = `
DELETE FROM pgferry.replica_tables WHERE replica = $1 AND schema_name = $2 AND table_name = $3`;

const RENAME = `
UPDATE pgferry.replica_tables SET schema_name = $4, table_name = $5, updated_at = now()
WHERE replica = $1 AND schema_name = $2 AND table_name = $3`;

const PEND = `
INSERT INTO pgferry.table_pending (replica, schema_name, table_name, lsn, message) VALUES ($1, $2, $3, $4::pg_lsn, $5)`;

const PENDING = `
SELECT encode(message, 'hex') AS message FROM pgferry.table_pending
WHERE replica = $1 AND (schema_name, table_name) IN (SELECT * FROM unnest($2::text[], $3::text[])) AND lsn > $4::pg_lsn
ORDER BY seq`;

const ALL_PENDING = `
SELECT schema_name, table_name, encode(message, 'hex') AS message FROM pgferry.table_pending WHERE replica = $1 ORDER BY seq`;

const CLEAR_PENDING = `
DELETE FROM pgferry.table_pending WHERE replica = $1 AND (schema_name, table_name) IN (SELECT * FROM unnest($2::text[], $3::text[]))`;

const CLEAR_ALL = `
WITH p AS (DELETE FROM pgferry.table_pending WHERE replica = $1)
DELETE FROM pgferry.replica_tables WHERE replica = $1`;

/** Whether this replica database has the registry (migration target/0002): checked once per process and database. */
const known = new WeakSet<object>();

async function hasRegistry(c: Queryable): Promise<boolean> {
  if (known.has(c)) return true;
  const { rows } = await c.query(`SELECT to_regclass('pgferry.replica_tables') IS NOT NULL AS yes`);
  const yes = rows[0].yes === true || rows[0].yes === 't';
  if (yes) known.add(c);
  return yes;
}

export const TableRegistry = {
  async list(c: Queryable, replica: string): Promise<RegisteredTable[]> {
    if (!(await hasRegistry(c))) return [];
    const { rows } = await c.query<{ schema_name: string; table_name: string; state: TableState; from_lsn: string; updated_at: string }>(LOAD, [replica]);
    return rows.map((r) => ({ schema: r.schema_name, table: r.table_name, state: r.state, from: r.from_lsn, updatedAt: r.updated_at }));
  },

  /** The gate a batch applies through (call with the checkpoint row locked). */
  async gate(c: Queryable, replica: string, legacy: ReadonlySet<string> | undefined, takesNewTables: boolean): Promise<TableGate> {
    const rows = await TableRegistry.list(c, replica);
    if (!rows.length) return { entries: null, legacy, takesNewTables };
    return { entries: new Map(rows.map((r) => [tableKey(r.schema, r.table), { state: r.state, from: r.from }])), legacy, takesNewTables };
  },

  /**
   * A replica's first registration (init/up, replica add, resync): the
   * tables it takes now are `ready` from the start, as they were before
   * the registry existed. A registry already there is kept. Returns it.
   */
  async ensure(c: Queryable, replica: string, tables: { schema: string; table: string }[]): Promise<RegisteredTable[]> {
    const now = await TableRegistry.list(c, replica);
    if (now.length || !tables.length) return now;
    await TableRegistry.set(c, replica, tables, 'ready', ZERO_LSN);
    return TableRegistry.list(c, replica);
  },

  /** Set the tables' state; `keep`: only where the table has no entry yet. */
  async set(c: Queryable, replica: string, tables: { schema: string; table: string }[], state: TableState, from: string, o: { keep?: boolean } = {}): Promise<void> {
    if (!tables.length) return;
    await c.query(o.keep ? INSERT_NEW : UPSERT, [replica, tables.map((t) => t.schema), tables.map((t) => t.table), state, from]);
  },

  /** A whole-replica snapshot (replica add, resync) holds every table it copied: they are all `ready`, nothing is kept pending. */
  async reset(c: Queryable, replica: string, tables: { schema: string; table: string }[]): Promise<void> {
    await c.query(CLEAR_ALL, [replica]);
    await TableRegistry.set(c, replica, tables, 'ready', ZERO_LSN);
  },

  async rename(c: Queryable, replica: string, before: { schema: string; table: string }, after: { schema: string; table: string }): Promise<void> {
    await c.query(RENAME_STALE, [replica, after.schema, after.table]);
    await c.query(RENAME, [replica, before.schema, before.table, after.schema, after.table]);
  },

  /**
   * Keep joining tables' changes (of one chunk, in its order) until their
   * copy is swapped in: filed under the first of them (one join takes its
   * tables together, so the swap reads them all).
   */
  async pend(c: Queryable, replica: string, keys: string[], m: TxnMessage): Promise<void> {
    const [schema, table] = JSON.parse(keys[0]) as [string, string];
    await c.query(PEND, [replica, schema, table, m.lsn, encodeMessage(m)]);
  },

  /** What was kept for joining tables after `from`, in the order the replica passed it. */
  async pending(c: Queryable, replica: string, tables: { schema: string; table: string }[], from: string): Promise<TxnMessage[]> {
    // As hex: pgferry's connections read every value as text.
    const { rows } = await c.query<{ message: string }>(PENDING, [replica, tables.map((t) => t.schema), tables.map((t) => t.table), from]);
    return rows.map((r) => decodeMessage(Buffer.from(r.message, 'hex')));
  },

  /** Everything kept for this replica's joining tables, in the order it passed it, each with the table it is filed under. */
  async allPending(c: Queryable, replica: string): Promise<{ schema: string; table: string; m: TxnMessage }[]> {
    const { rows } = await c.query<{ schema_name: string; table_name: string; message: string }>(ALL_PENDING, [replica]);
    return rows.map((r) => ({ schema: r.schema_name, table: r.table_name, m: decodeMessage(Buffer.from(r.message, 'hex')) }));
  },

  async clearPending(c: Queryable, replica: string, tables: { schema: string; table: string }[]): Promise<void> {
    await c.query(CLEAR_PENDING, [replica, tables.map((t) => t.schema), tables.map((t) => t.table)]);
  },
};

/** pg_try_advisory_lock keys: one operation at a time changes which tables a replica takes (join, remove, resync). */
const TABLES_LOCK = 7_364_211;

/**
 * Hold, for the session of `c`, the replica's lock on changes to its table
 * set: a second `table add`, a `table remove` or a `replica resync` of the
 * same replica meanwhile would drop a copy, clear kept changes or overwrite
 * the table, so it is refused with the reason.
 */
export async function lockReplicaTables(c: pg.ClientBase, replica: string, what: string): Promise<void> {
  const { rows } = await c.query('SELECT pg_catalog.pg_try_advisory_lock($1, pg_catalog.hashtext($2)) AS ok', [TABLES_LOCK, replica]);
  if (!(rows[0].ok === true || rows[0].ok === 't')) {
    throw new ConfigError(
      `replica '${replica}': another pgferry table add, table remove or replica resync is changing its tables right now; ${what} waits for it: run this again once it has finished (pgferry table list shows the tables' states)`,
    );
  }
}
