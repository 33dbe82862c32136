import type pg from 'pg';
import type { Change, RelationInfo, TxnMessage } from '../change';
import { isTransientSqlState } from '../errors';
import { buildDeleteRows, buildInsertRows, buildUpdateRows, changedColumns, insertRowsLimit, keyColumns } from './sql-builder';

/**
 * Runs of changes applied as one statement instead of one per row — the same
 * rows, in the same order, with the same result:
 *  - consecutive inserts into one table with the same columns: one
 *    multi-row INSERT;
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

/** The replica's column types (base names, no typmod), per connection and table; dropped when a run is refused. */
const typeCache = new WeakMap<pg.ClientBase, Map<string, Map<string, string>>>();

async function replicaTypes(c: pg.ClientBase, rel: RelationInfo): Promise<Map<string, string>> {
  let perConn = typeCache.get(c);
  if (!perConn) typeCache.set(c, (perConn = new Map()));
  const key = JSON.stringify([rel.schema, rel.table]);
  let types = perConn.get(key);
  if (!types) {
    const { rows } = await c.query(
      `SELECT a.attname, pg_catalog.format_type(a.atttypid, NULL) AS t FROM pg_catalog.pg_attribute a
       WHERE a.attrelid = (SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)
         AND a.attnum > 0 AND NOT a.attisdropped`,
      [rel.schema, rel.table],
    );
    types = new Map(rows.map((r) => [r.attname as string, r.t as string]));
    perConn.set(key, types);
  }
  return types;
}

/** Length of the run that can go as one statement, starting at `i` (1: apply it alone). */
export function runLength(m: TxnMessage, changes: Change[], i: number): number {
  const first = changes[i];
  if (first.op === 'truncate') return 1;
  const rel = m.relations[first.rel];
  if (!rel) return 1;
  if (first.op === 'insert') {
    const cols = Object.keys(first.new);
    const limit = insertRowsLimit(cols.length);
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
      await c.query(buildInsertRows(rel, (run as Insert[]).map((ch) => ch.new)));
    } else if (first.op === 'update') {
      const keys = keyColumns(rel);
      const updates = run as Update[];
      await c.query(buildUpdateRows(rel, keys, changedColumns(first.old, first.new), updates, await replicaTypes(c, rel)));
    } else {
      await c.query(buildDeleteRows(rel, keyColumns(rel), (run as Delete[]).map((ch) => ch.old), await replicaTypes(c, rel)));
    }
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (isTransientSqlState(code) || !code) throw err;
    await c.query('ROLLBACK TO SAVEPOINT pgferry_rows');
    typeCache.get(c)?.delete(JSON.stringify([rel.schema, rel.table]));
    for (const ch of run) await applier.one(ch);
  }
  await c.query('RELEASE SAVEPOINT pgferry_rows');
}
