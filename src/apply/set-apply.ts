import type pg from 'pg';
import { relKey, type Change, type RelationInfo, type TxnMessage } from '../change';
import { isRefusal } from '../errors';
import { from as copyFrom } from 'pg-copy-streams';
import {
  COPY_MAX_ROWS,
  COPY_MIN_ROWS,
  buildCopyInsert,
  buildDeleteRows,
  buildInsertRows,
  buildUpdateRows,
  changedColumns,
  copyText,
  insertRowsLimit,
  keyColumns,
} from './sql-builder';

/**
 * Runs of changes applied as one statement instead of one per row — the same
 * rows, in the same order, with the same result:
 *  - consecutive inserts into one table with the same columns: one COPY
 *    (long runs) or one multi-row INSERT (short ones);
 *  - consecutive updates of one keyed table that write the same columns,
 *    change no key and touch no row twice: one UPDATE … FROM (VALUES …);
 *  - consecutive deletes from one keyed table: one DELETE … USING (VALUES …).
 * If the replica refuses such a statement, the run is undone (savepoint) and
 * applied row by row, so the error names the row. Tables matched on the whole
 * row (REPLICA IDENTITY FULL) are always applied row by row.
 */
export interface RunApplier {
  /** Apply one change on its own (row by row), reporting a refusal with the row. */
  one(change: Change): Promise<void>;
}

type Insert = Extract<Change, { op: 'insert' }>;
type Update = Extract<Change, { op: 'update' }>;
type Delete = Extract<Change, { op: 'delete' }>;

const sameList = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/** The replica's column types (base names, no typmod), per connection and table; dropped when a statement is refused. */
const typeCache = new WeakMap<pg.ClientBase, Map<string, Map<string, string>>>();

/** The types loaded before the last refresh, to tell whether the replica's tables changed since. */
const previousTypes = new WeakMap<pg.ClientBase, Map<string, Map<string, string>>>();
/** Per connection, how many times a replica table's column types were seen to change. */
const generations = new WeakMap<pg.ClientBase, number>();

/**
 * Read the replica's column types again as they are needed (apply calls this
 * at the start of every batch): a table altered since (ALTER COLUMN … TYPE)
 * must not be written with the parameter types of statements prepared before.
 */
export function refreshReplicaTypes(c: pg.ClientBase): void {
  const current = typeCache.get(c);
  if (!current?.size) return;
  const previous = previousTypes.get(c) ?? new Map();
  for (const [k, v] of current) previous.set(k, v);
  previousTypes.set(c, previous);
  typeCache.set(c, new Map());
}

/**
 * A statement as this connection runs it. A named statement is prepared once
 * per connection with the parameter types of the replica's columns at that
 * moment, so its name carries the connection's type generation: once a table's
 * types changed, every statement is prepared anew.
 */
export async function prepared<S extends { name: string }>(c: pg.ClientBase, rel: RelationInfo, st: S): Promise<S> {
  if (!st.name) return st;
  await replicaTypes(c, rel);
  const g = generations.get(c) ?? 0;
  return g ? { ...st, name: `${st.name}_g${g}` } : st;
}

/** `key` is the relation's key in the change log (relKey), which changes already carry. */
export async function replicaTypes(c: pg.ClientBase, rel: RelationInfo, key = relKey(rel.schema, rel.table)): Promise<Map<string, string>> {
  let perConn = typeCache.get(c);
  if (!perConn) typeCache.set(c, (perConn = new Map()));
  let types = perConn.get(key);
  if (!types) {
    const { rows } = await c.query(
      // Without a typmod `character` and `bit` would mean length 1: cast to bpchar and varbit instead,
      // and let the column's own typmod check the value, as a one-row statement would.
      `SELECT a.attname,
              CASE a.atttypid WHEN 'bpchar'::regtype THEN 'pg_catalog.bpchar' WHEN '_bpchar'::regtype THEN 'pg_catalog.bpchar[]'
                              WHEN 'bit'::regtype THEN 'pg_catalog.varbit' WHEN '_bit'::regtype THEN 'pg_catalog.varbit[]'
                              ELSE pg_catalog.format_type(a.atttypid, NULL) END AS t
       FROM pg_catalog.pg_attribute a
       WHERE a.attrelid = (SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)
         AND a.attnum > 0 AND NOT a.attisdropped`,
      [rel.schema, rel.table],
    );
    types = new Map(rows.map((r) => [r.attname as string, r.t as string]));
    perConn.set(key, types);
    const before = previousTypes.get(c)?.get(key);
    if (before && !sameTypes(before, types)) generations.set(c, (generations.get(c) ?? 0) + 1);
    previousTypes.get(c)?.set(key, types);
  }
  return types;
}

function sameTypes(a: Map<string, string>, b: Map<string, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

/** Forget a table's cached replica types (after a refusal: the table may have been altered). */
export function forgetReplicaTypes(c: pg.ClientBase, rel: RelationInfo): void {
  typeCache.get(c)?.delete(relKey(rel.schema, rel.table));
}

/** Length of the run that can go as one statement, starting at `i` (1: apply it alone). */
export function runLength(m: TxnMessage, changes: Change[], i: number): number {
  const first = changes[i];
  if (first.op === 'truncate') return 1;
  const rel = m.relations[first.rel];
  if (!rel) return 1;
  if (first.op === 'insert') {
    const cols = Object.keys(first.new);
    const limit = COPY_MAX_ROWS;
    let j = i + 1;
    while (j < changes.length && j - i < limit) {
      const ch = changes[j];
      if (ch.op !== 'insert' || ch.rel !== first.rel || !sameList(Object.keys(ch.new), cols)) break;
      j += 1;
    }
    return j - i;
  }
  if (rel.identity === 'full') return 1;
  const keys = keyColumns(rel);
  if (!keys.length || !keys.every((k) => k in first.old)) return 1;
  const keyOf = (old: Record<string, unknown>) => JSON.stringify(keys.map((k) => old[k]));
  if (first.op === 'update') {
    const cols = changedColumns(first.old, first.new);
    const keyKept = (ch: Update) => keys.every((k) => !(k in ch.new) || ch.new[k] === ch.old[k]);
    if (!cols.length || !keyKept(first)) return 1;
    const limit = insertRowsLimit(keys.length + cols.length);
    const seen = new Set([keyOf(first.old)]);
    let j = i + 1;
    while (j < changes.length && j - i < limit) {
      const ch = changes[j];
      if (ch.op !== 'update' || ch.rel !== first.rel || !keyKept(ch) || !keys.every((k) => k in ch.old)) break;
      if (!sameList(changedColumns(ch.old, ch.new), cols) || seen.has(keyOf(ch.old))) break;
      seen.add(keyOf(ch.old));
      j += 1;
    }
    return j - i;
  }
  const limit = insertRowsLimit(keys.length);
  let j = i + 1;
  while (j < changes.length && j - i < limit) {
    const ch = changes[j];
    if (ch.op !== 'delete' || ch.rel !== first.rel || !keys.every((k) => k in ch.old)) break;
    j += 1;
  }
  return j - i;
}

/** Apply a run (length ≥ 2 from runLength) as one statement, or row by row if the replica refuses it. */
export async function applyRun(c: pg.ClientBase, m: TxnMessage, run: Change[], applier: RunApplier): Promise<void> {
  const first = run[0];
  if (first.op === 'truncate') throw new Error('a TRUNCATE is never part of a run');
  const rel = m.relations[first.rel];
  await c.query('SAVEPOINT pgferry_rows');
  try {
    if (first.op === 'insert') {
      const rows = (run as Insert[]).map((ch) => ch.new);
      const perInsert = insertRowsLimit(Object.keys(rows[0]).length);
      if (rows.length >= COPY_MIN_ROWS) await copyRows(c, rel, rows);
      else for (let i = 0; i < rows.length; i += perInsert) await c.query(await prepared(c, rel, buildInsertRows(rel, rows.slice(i, i + perInsert))));
    } else if (first.op === 'update') {
      const keys = keyColumns(rel);
      const updates = run as Update[];
      await c.query(await prepared(c, rel, buildUpdateRows(rel, keys, changedColumns(first.old, first.new), updates, await replicaTypes(c, rel))));
    } else {
      await c.query(await prepared(c, rel, buildDeleteRows(rel, keyColumns(rel), (run as Delete[]).map((ch) => ch.old), await replicaTypes(c, rel))));
    }
  } catch (err) {
    if (!isRefusal(err)) throw err;
    await c.query('ROLLBACK TO SAVEPOINT pgferry_rows');
    forgetReplicaTypes(c, rel);
    for (const ch of run) await applier.one(ch);
  }
  await c.query('RELEASE SAVEPOINT pgferry_rows');
}

/** Insert rows with COPY … FROM STDIN (text format) on the batch's connection, inside its transaction. */
async function copyRows(c: pg.ClientBase, rel: RelationInfo, rows: Record<string, string | null>[]): Promise<void> {
  const cols = Object.keys(rows[0]);
  const stream = c.query(copyFrom(buildCopyInsert(rel, cols)));
  await new Promise<void>((resolve, reject) => {
    stream.on('error', reject);
    stream.on('finish', resolve);
    stream.end(copyText(cols, rows));
  });
}
