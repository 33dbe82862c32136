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
import type { RelationInfo, Row, RowChange, TxnMessage } from '../change';
import { reduceKeyed } from './net-change';
import type { NetChange } from './net-change';
import { keyColumns } from './sql-builder';
import type { KeyedRows } from './staging';

/**
 * Changes gathered in one window before it is sent. The applier writes a full
 * window while the next one fills (applier.ts). Each window costs about ten
 * round trips to the replica whatever its size (savepoints, a staging table
 * per table, COPY, the set statements), and that chain, not apply's CPU, was
 * what bound a catch-up: with windows of 2,000 changes, W6's replica
 * connection had a statement outstanding 87% of the time while the replica's
 * backend was busy 43% of it. So a window is half a batch: a catch-up's batch
 * (20,000 changes by default) goes as two, the first written while the second
 * fills. bench:apply, 100,000 TPC-B transactions, batches of 20,000, windows
 * of 2,000 → 21,500–25,300 txns/s; 4,000 → 28,800; 8,000 → 31,300–34,500;
 * 10,000 → 33,000–35,200; 20,000 → 31,000–37,500. Under a live load a batch
 * ends at max_wait_ms long before, and its window is as small as it is.
 */
export const windowFor = (maxChanges: number): number => Math.max(1, Math.ceil(maxChanges / 2));

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
function netKeys(r: RelationInfo): readonly string[] {
  return r.identity === 'full' || r.identity === 'nothing' ? [] : keyColumns(r);
}

export interface TableNet {
  rel: RelationInfo;
  keys: readonly string[];
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

/** A table's net change as sets of rows, which the applier sends as COPY and set statements (applier.ts `insertRows`, `setRows`). */
export interface TableWrites {
  /** The keys deleted before any write (every table's deletes go first); null: none. */
  deletes: KeyedRows | null;
  /** Whole rows inserted, grouped by their columns. */
  inserts: Row[][];
  /** Rows updated by key, grouped by the columns they write (those known to have changed). */
  updates: KeyedRows[];
}

export function tableWrites(t: TableNet): TableWrites {
  const deleted = t.net.filter((n) => n.deleteFirst).map((n) => ({ old: n.key, new: n.key }));
  const writes = t.net.flatMap((n) => (n.write ? [n.write] : []));
  const inserts = groupBy(writes.filter((w) => w.op === 'insert'), (w) => columnsOf(w.row).join('\u0000')).map((g) => g.map((w) => w.row));
  const updated = writes.filter((w) => w.op === 'update').map((w) => ({ row: w.row, cols: columnsOf(w.row).filter((c) => !t.keys.includes(c)) }));
  const updates = groupBy(updated.filter((u) => u.cols.length), (u) => u.cols.join('\u0000')).map(
    (g): KeyedRows => ({ op: 'update', rel: t.rel, keys: t.keys, cols: g[0].cols, rows: g.map((u) => ({ old: u.row, new: u.row })) }),
  );
  return { deletes: deleted.length ? { op: 'delete', rel: t.rel, keys: t.keys, cols: [], rows: deleted } : null, inserts, updates };
}
