/**
 * Net-change apply: whole source transactions of
 * keyed tables (and inserts into keyless ones) are gathered in a window and reach the replica as their net
 * change — per table one DELETE … USING for the keys deleted first, then
 * multi-row INSERTs and UPDATE … FROM (VALUES …) for the last image of each
 * key (net-change.ts) — instead of one statement per change. The batch
 * commits them in one replica transaction with the checkpoint, so readers
 * see the same states as before: a prefix of the source's commit order.
 *
 * This module is the pure part: which transactions may join a window, and
 * the statements of a window's net change. The applier (applier.ts) runs
 * them under a savepoint and, if the replica refuses the set form (a unique
 * constraint other than the key, a foreign key checked mid-way), undoes it
 * and applies the window's transactions in order, which names the row.
 */
import type { RelationInfo, RowChange, TxnMessage } from '../change';
import { reduceKeyed } from './net-change';
import type { NetChange } from './net-change';
import { Statement, buildDeleteRows, buildInsertRows, buildUpdateRows, insertRowsLimit, keyColumns } from './sql-builder';

/** Most changes gathered in one window before it is sent (bounds the statements' size). */
export const WINDOW_CHANGES = 20_000;

/**
 * A whole transaction (one message) whose changes are row changes of keyed
 * tables carrying their key columns, or inserts into tables without a key
 * (no primary key, or REPLICA IDENTITY FULL / NOTHING): those rows are a
 * multiset, so their order among themselves and against other tables' rows
 * does not change the final state. An update or delete of such a table
 * keeps the transaction out (it is applied in order, after the window).
 */
export function windowable(m: TxnMessage): boolean {
  if (m.seq !== 0 || !m.last || !m.changes.length) return false;
  for (const ch of m.changes) {
    if (ch.op === 'truncate' || ch.op === 'schema') return false;
    const r = m.relations[ch.rel];
    if (!r) return false;
    if (!netKeys(r).length) {
      if (ch.op !== 'insert') return false;
      continue;
    }
    const keys = keyColumns(r);
    const image = ch.op === 'insert' ? ch.new : ch.old;
    if (!keys.every((k) => k in image)) return false;
  }
  return true;
}

/** The key a window reduces a table's changes by: none for a table whose rows only a whole image identifies. */
function netKeys(r: RelationInfo): string[] {
  return r.identity === 'full' || r.identity === 'nothing' ? [] : keyColumns(r);
}

export interface TableNet {
  rel: RelationInfo;
  keys: string[];
  net: NetChange[];
}

/** The window's net change per table, in first-touched order; null where it cannot be expressed exactly. */
export function reduceWindow(txns: readonly TxnMessage[]): TableNet[] | null {
  const byRel = new Map<string, { rel: RelationInfo; changes: RowChange[] }>();
  for (const m of txns) {
    for (const ch of m.changes) {
      if (ch.op === 'truncate' || ch.op === 'schema') return null;
      const rel = m.relations[ch.rel];
      const e = byRel.get(ch.rel);
      if (!e) byRel.set(ch.rel, { rel, changes: [ch] });
      else if (e.rel !== rel && !sameShape(e.rel, rel)) return null; // the table changed shape within the window: apply in order
      else e.changes.push(ch);
    }
  }
  const out: TableNet[] = [];
  for (const { rel, changes } of byRel.values()) {
    const keys = netKeys(rel);
    if (!keys.length) {
      // Inserts only (windowable): each row as it came.
      const rows: NetChange[] = [];
      for (const ch of changes) {
        if (ch.op !== 'insert') return null;
        rows.push({ key: {}, deleteFirst: false, write: { op: 'insert', row: { ...ch.new } } });
      }
      out.push({ rel, keys, net: rows });
      continue;
    }
    const net = reduceKeyed(keys, changes, rel.columns.map((c) => c.name));
    if (!net) return null;
    out.push({ rel, keys, net });
  }
  return out;
}

/** Whether two descriptions of a relation agree (each message decodes its own objects). */
function sameShape(a: RelationInfo, b: RelationInfo): boolean {
  if (a.schema !== b.schema || a.table !== b.table || a.identity !== b.identity || a.columns.length !== b.columns.length) return false;
  return a.columns.every((c, i) => c.name === b.columns[i].name && c.type === b.columns[i].type && c.key === b.columns[i].key);
}

const columnsOf = (row: Record<string, unknown>) => Object.keys(row).sort();

function chunks<T>(xs: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += size) out.push(xs.slice(i, i + size));
  return out;
}

function groupBy<T>(xs: T[], key: (x: T) => string): T[][] {
  const m = new Map<string, T[]>();
  for (const x of xs) {
    const k = key(x);
    const g = m.get(k);
    if (g) g.push(x);
    else m.set(k, [x]);
  }
  return [...m.values()];
}

/** Every table's deletes, in first-touched order: they come before any write. */
export function deleteStatements(t: TableNet, types: Map<string, string>): Statement[] {
  const keys = t.net.filter((n) => n.deleteFirst).map((n) => n.key);
  return chunks(keys, insertRowsLimit(t.keys.length)).map((part) => buildDeleteRows(t.rel, t.keys, part, types));
}

/** A table's writes: inserts of whole rows, then updates of the columns known to have changed, grouped by their columns. */
export function writeStatements(t: TableNet, types: Map<string, string>): Statement[] {
  const out: Statement[] = [];
  const writes = t.net.flatMap((n) => (n.write ? [n.write] : []));
  for (const group of groupBy(writes.filter((w) => w.op === 'insert'), (w) => columnsOf(w.row).join('\u0000'))) {
    const rows = group.map((w) => w.row);
    for (const part of chunks(rows, insertRowsLimit(Object.keys(rows[0]).length))) out.push(buildInsertRows(t.rel, part));
  }
  const updates = writes.filter((w) => w.op === 'update').map((w) => ({ row: w.row, cols: columnsOf(w.row).filter((c) => !t.keys.includes(c)) }));
  for (const group of groupBy(updates.filter((u) => u.cols.length), (u) => u.cols.join('\u0000'))) {
    const cols = group[0].cols;
    for (const part of chunks(group, insertRowsLimit(t.keys.length + cols.length))) {
      out.push(buildUpdateRows(t.rel, t.keys, cols, part.map((u) => ({ old: u.row, new: u.row })), types));
    }
  }
  return out;
}
