/**
 * Net-change reduction (issue 17, step one: the pure part). A batch commits
 * many source transactions in one replica transaction, so readers only ever
 * see its final state: for a table with a key, only the last image of each
 * row matters. This reduces a run of row changes of ONE keyed table to, per
 * key, whether the row is deleted first and what is written after:
 *
 *   - `insert`: the whole row (the key was absent, or deleted first);
 *   - `update`: the columns known to have changed, for a row that existed
 *     before the run (unchanged-TOAST columns, absent from the images, are
 *     left untouched on the replica).
 *
 * Applying the result — every delete, then every write — leaves the table as
 * applying the changes one by one would (test/unit/net-change.property.test.ts
 * checks that against such an oracle). Unique constraints other than the key
 * and foreign keys may still refuse the set form where the ordered form
 * would pass; the applier falls back to ordered apply then. Where the net
 * change cannot be expressed exactly, `reduceKeyed` returns null and the
 * caller applies the run in order:
 *   - a key change (UPDATE of the key) whose full image is not known (an
 *     unchanged-TOAST column, not sent, of a row that existed before the run);
 *   - a change missing a key column.
 *
 * Keys that move are carried exactly, however they chain — shifts, swaps
 * through a free value, cycles, a key freed and taken again, across
 * transactions — as long as the key identifies one row at every step of
 * the source's history, which PostgreSQL guarantees for a key it checks at
 * each row (the only kind it takes as a replica identity, and the only kind
 * capture names rows by). A DEFERRABLE key does not: inside a transaction
 * it may name two rows at once (UPDATE … SET id = id + 1 gives row 1 key 2
 * while row 2 still holds it), and then a change that names its row by the
 * key is ambiguous — the same changes come from histories with different
 * results, so no reduction, and no ordered apply by key, can be right.
 * Where the changes themselves show a key naming two rows (a row given a
 * key another row of the run still holds, a change to a key the run has
 * emptied), `reduceKeyed` throws KeyNotUnique rather than guess; the
 * applier stops the replica with it.
 */
import type { Row, RowChange } from '../change';

export interface NetWrite {
  op: 'insert' | 'update';
  /** insert: the whole row; update: the columns to set (key columns included, unchanged). */
  row: Row;
}

export interface NetChange {
  /** The key's columns and values, as the replica identity names them. */
  key: Row;
  /** DELETE the row with this key before writing (it may have existed before the run). */
  deleteFirst: boolean;
  write: NetWrite | null;
}

/** A map key for one row: its key values in key-column order (JSON of them; one key column's value tagged, so null and every text stay distinct). */
export function keyOf(keys: readonly string[], row: Row): string | null {
  if (keys.length === 1) {
    // One key column (the common case): its value tagged, so null and every text stay distinct, without a JSON text per change.
    const k = keys[0];
    if (!(k in row)) return null;
    const v = row[k];
    return v === null ? 'n' : `s${v}`;
  }
  const values: (string | null)[] = [];
  for (const k of keys) {
    if (!(k in row)) return null;
    values.push(row[k]);
  }
  return JSON.stringify(values);
}

/** The changes show `key` naming two rows at once (see above): `change` is where it shows. */
export class KeyNotUnique extends Error {
  constructor(
    readonly change: RowChange,
    readonly key: Row,
    readonly why: string,
  ) {
    super(`key ${JSON.stringify(key)} ${why}`);
    this.name = 'KeyNotUnique';
  }
}

function pick(keys: readonly string[], row: Row): Row {
  const out: Row = {};
  for (const k of keys) out[k] = row[k];
  return out;
}

/**
 * The net change of `changes` (row changes of one table whose key columns are
 * `keys`, in source order), in first-touched key order; null when it cannot
 * be expressed exactly (see above). `columns`, all of the table's columns,
 * tells an update that sent every column (a whole image) from one that did not.
 * Throws KeyNotUnique where the changes show the key naming two rows.
 */
export function reduceKeyed(keys: readonly string[], changes: readonly RowChange[], columns?: readonly string[]): NetChange[] | null {
  if (!keys.length) return null;
  const net = new Map<string, NetChange>();
  const state = (k: string, key: Row) => {
    let s = net.get(k);
    if (!s) net.set(k, (s = { key, deleteFirst: false, write: null }));
    return s;
  };
  for (const ch of changes) {
    if (ch.op === 'insert') {
      const k = keyOf(keys, ch.new);
      if (k === null) return null;
      const s = state(k, pick(keys, ch.new));
      // On the source the key was absent here: either never there, or deleted earlier in the run.
      if (s.write) throw new KeyNotUnique(ch, s.key, 'was inserted while a row of the same transactions still held it');
      s.write = { op: 'insert', row: { ...ch.new } };
      continue;
    }
    const k = keyOf(keys, ch.old);
    if (k === null) return null;
    const s = state(k, pick(keys, ch.old));
    if (s.deleteFirst && !s.write) throw new KeyNotUnique(ch, s.key, `was ${ch.op === 'delete' ? 'deleted' : 'updated'} after the same transactions had left it without a row`);
    if (ch.op === 'delete') {
      s.deleteFirst = true;
      s.write = null;
      continue;
    }
    const moved = keys.some((c) => c in ch.new && ch.new[c] !== ch.old[c]);
    if (!moved) {
      const before = s.write?.row ?? pick(keys, ch.old);
      s.write = { op: s.write?.op ?? 'update', row: { ...before, ...ch.new } };
      continue;
    }
    // The key changed: the old key's row is gone, the new key's row holds the whole merged image —
    // known when an earlier insert in the run gave it, or when the update sent every column.
    const whole = columns !== undefined && columns.every((c) => c in ch.new);
    if (s.write?.op !== 'insert' && !whole) return null; // columns not sent (unchanged TOAST) are unknown here
    const image = { ...(s.write?.op === 'insert' ? s.write.row : {}), ...ch.new };
    s.deleteFirst = true;
    s.write = null;
    const k2 = keyOf(keys, image)!;
    const s2 = state(k2, pick(keys, image));
    if (s2.write) throw new KeyNotUnique(ch, s2.key, 'was given to a row while another row of the same transactions still held it');
    s2.write = { op: 'insert', row: image };
  }
  return [...net.values()];
}
