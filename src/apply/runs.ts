/**
 * Runs of changes that go to the replica as one statement instead of one per
 * row — the same rows, in the same order, with the same result:
 *  - consecutive inserts into one table with the same columns: one COPY
 *    (long runs; inserts carried as COPY lines are copied as they are) or
 *    one multi-row INSERT (short ones);
 *  - consecutive updates of one keyed table that write the same columns,
 *    change no key and touch no row twice: one UPDATE … FROM a staging
 *    table filled by COPY (long runs, staging.ts) or UPDATE … FROM (VALUES …);
 *  - consecutive deletes from one keyed table: likewise, DELETE … USING.
 * Tables matched on the whole row (REPLICA IDENTITY FULL) are always applied
 * row by row. Pure: the applier (applier.ts) runs what this finds.
 */
import type { Change, TxnMessage } from '../change';
import { COPY_MAX_ROWS, changedColumns, keyColumns } from './sql-builder';
import { isLineInsert } from '../changelog/copy-lines';

type Update = Extract<Change, { op: 'update' }>;

const sameList = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/** Length of the run that can go as one statement, starting at `i` (1: apply it alone). */
export function runLength(m: TxnMessage, changes: Change[], i: number): number {
  const first = changes[i];
  if (first.op === 'truncate' || first.op === 'schema') return 1;
  const rel = m.relations[first.rel];
  if (!rel) return 1;
  if (isLineInsert(first)) {
    // COPY lines (changelog/copy-lines.ts) hold every column: a run of them is read without parsing one.
    let j = i + 1;
    while (j < changes.length && j - i < COPY_MAX_ROWS) {
      const ch = changes[j];
      if (!isLineInsert(ch) || ch.rel !== first.rel) break;
      j += 1;
    }
    return j - i;
  }
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
    const limit = COPY_MAX_ROWS;
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
  const limit = COPY_MAX_ROWS;
  let j = i + 1;
  while (j < changes.length && j - i < limit) {
    const ch = changes[j];
    if (ch.op !== 'delete' || ch.rel !== first.rel || !keys.every((k) => k in ch.old)) break;
    j += 1;
  }
  return j - i;
}
