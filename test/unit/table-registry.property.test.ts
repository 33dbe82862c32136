import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { Change, RelationInfo, TxnMessage } from '../../src/change';
import { formatLsn, ZERO_LSN } from '../../src/lsn';
import { decide, route, tableKey, TableEntry, TableGate } from '../../src/apply/table-registry';

/**
 * The join protocol of src/snapshot/join.ts as a property, over the pure
 * routing it rests on (table-registry.ts `route`). A replica reads random
 * source transactions in random batches; between batches a table joins
 * (registered `copying`, possibly restarted: an interrupted `table add` run
 * again), a snapshot at any position the source has reached is copied, the
 * swap replays what was kept after it; another table is removed at a random
 * boundary. Oracle: the joined table holds each of its changes exactly once,
 * in commit order; a ready table every one; a removed table exactly those up
 * to its removal; a table that never joined none, and is reported.
 */
const RUNS = Number(process.env.PGFERRY_PROPERTY_RUNS ?? 2000);

const TABLES = ['a', 'j', 'u', 'odd "name".x'] as const; // a: ready; j: joins; u: never joins; the last: removed
type T = (typeof TABLES)[number];
const lsn = (i: number) => formatLsn(BigInt(i) * 0x100n);
const rel = (t: T): RelationInfo => ({ schema: 's', table: t, identity: 'default', columns: [{ name: 'id', type: 'int4', typeOid: 23, key: true } as never] });

interface Txn {
  id: number;
  /** Per change: the table, and whether it is a truncate of it and the next table. */
  changes: { t: T; truncate: boolean }[];
}

function message(tx: Txn): TxnMessage {
  const relations: Record<string, RelationInfo> = {};
  const changes: Change[] = [];
  tx.changes.forEach((c, k) => {
    relations[c.t] = rel(c.t);
    if (c.truncate) {
      const other = TABLES[(TABLES.indexOf(c.t) + 1) % TABLES.length];
      relations[other] = rel(other);
      changes.push({ op: 'truncate', rels: [c.t, other], cascade: false, restartIdentity: false } as never);
    } else changes.push({ op: 'insert', rel: c.t, new: { id: `${tx.id}.${k}` } });
  });
  return { v: 2, source: 'src', xid: tx.id, lsn: lsn(tx.id), endLsn: lsn(tx.id), commitTime: '', seq: 0, last: true, relations, changes };
}

/** What each table received, as "txn.k" ids (a truncate as "txn.T"), in the order applied. */
type Received = Map<T, string[]>;

function record(into: Received, m: TxnMessage): void {
  for (const ch of m.changes) {
    if (ch.op === 'insert') into.set(ch.rel as T, [...(into.get(ch.rel as T) ?? []), ch.new.id as string]);
    else if (ch.op === 'truncate') for (const r of ch.rels) into.set(r as T, [...(into.get(r as T) ?? []), `${m.xid}.T`]);
  }
}

/** Everything `t` was sent by transactions in (after, upTo], in order. */
function expected(txns: Txn[], t: T, after: number, upTo: number): string[] {
  const out: string[] = [];
  for (const tx of txns) {
    if (tx.id <= after || tx.id > upTo) continue;
    tx.changes.forEach((c, k) => {
      if (c.t === t && !c.truncate) out.push(`${tx.id}.${k}`);
      if (c.truncate && (c.t === t || TABLES[(TABLES.indexOf(c.t) + 1) % TABLES.length] === t)) out.push(`${tx.id}.T`);
    });
  }
  return out;
}

const scenario = fc.record({
  txns: fc.array(fc.array(fc.record({ t: fc.constantFrom(...TABLES), truncate: fc.boolean() }), { minLength: 0, maxLength: 4 }), { minLength: 1, maxLength: 40 }),
  /** Batch sizes, cycled. */
  batches: fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 6 }),
  /** Fractions placing the join's steps: start, attempts' snapshots, swap; and the removal. */
  start: fc.double({ min: 0, max: 1, noNaN: true }),
  attempts: fc.array(fc.record({ at: fc.double({ min: 0, max: 1, noNaN: true }), ahead: fc.double({ min: 0, max: 1, noNaN: true }) }), { minLength: 1, maxLength: 3 }),
  swap: fc.double({ min: 0, max: 1, noNaN: true }),
  remove: fc.double({ min: 0, max: 1, noNaN: true }),
});

describe('a table joining a running replica (property)', () => {
  it('gets each of its changes exactly once, in order, while the others stream on', () => {
    fc.assert(
      fc.property(scenario, (s) => {
        const txns: Txn[] = s.txns.map((changes, i) => ({ id: i + 1, changes }));
        const n = txns.length;
        // Batch boundaries: how many transactions the replica has applied after each batch.
        const bounds = [0];
        for (let k = 0; bounds[bounds.length - 1] < n; k += 1) bounds.push(Math.min(n, bounds[bounds.length - 1] + s.batches[k % s.batches.length]));
        const pick = (f: number, min = 0) => {
          const ok = bounds.filter((b) => b >= min);
          return ok[Math.min(ok.length - 1, Math.floor(f * ok.length))];
        };
        const start = pick(s.start);
        // Each attempt registers `copying` (again) at a boundary, then its snapshot sees the source up to some point at or after it.
        let at = start;
        const attempts = s.attempts.map((a) => {
          at = pick(a.at, at);
          return { at, snapshot: at + Math.floor(a.ahead * (n - at + 1)) };
        });
        const last = attempts[attempts.length - 1];
        const swap = pick(s.swap, last.at);
        const snapshotAt = Math.min(last.snapshot, n);
        const removedAt = pick(s.remove);

        const entries = new Map<string, TableEntry>([
          [tableKey('s', 'a'), { state: 'ready', from: ZERO_LSN }],
          [tableKey('s', 'odd "name".x'), { state: 'ready', from: ZERO_LSN }],
        ]);
        const gate: TableGate = { entries, takesNewTables: false };
        const got: Received = new Map();
        const pending: TxnMessage[] = [];
        const unknown = new Set<string>();
        // The snapshot copy: the joined table as of the snapshot.
        const snapshotRows = expected(txns, 'j', 0, snapshotAt);

        for (let b = 0; b < bounds.length - 1; b += 1) {
          const boundary = bounds[b];
          for (const a of attempts) if (a.at === boundary) entries.set(tableKey('s', 'j'), { state: 'copying', from: ZERO_LSN });
          if (boundary === swap) {
            // The swap: the copy replaces the table; what was kept after the snapshot is applied; ready from there.
            got.set('j', [...snapshotRows]);
            entries.set(tableKey('s', 'j'), { state: 'ready', from: lsn(snapshotAt) });
            for (const m of pending) {
              const r = route(gate, m);
              if (r.apply) record(got, r.apply);
            }
            pending.length = 0;
          }
          if (boundary === removedAt) entries.set(tableKey('s', 'odd "name".x'), { state: 'removed', from: lsn(boundary) });
          for (const tx of txns.slice(bounds[b], bounds[b + 1])) {
            const r = route(gate, message(tx));
            if (r.apply) record(got, r.apply);
            if (r.pend) {
              expect(r.pend.keys).toEqual([tableKey('s', 'j')]);
              pending.push(r.pend.m);
            }
            r.unknown.forEach((k) => unknown.add(k));
          }
        }
        if (swap === n) {
          got.set('j', [...snapshotRows]);
          entries.set(tableKey('s', 'j'), { state: 'ready', from: lsn(snapshotAt) });
          for (const m of pending) {
            const r = route(gate, m);
            if (r.apply) record(got, r.apply);
          }
        }
        expect(got.get('j') ?? []).toEqual(expected(txns, 'j', 0, n));
        expect(got.get('a') ?? []).toEqual(expected(txns, 'a', 0, n));
        expect(got.get('odd "name".x') ?? []).toEqual(expected(txns, 'odd "name".x', 0, removedAt));
        expect(got.get('u') ?? []).toEqual([]);
        expect(unknown.has(tableKey('s', 'u'))).toBe(expected(txns, 'u', 0, n).length > 0);
      }),
      { numRuns: RUNS },
    );
  });
});

describe('route', () => {
  const gate = (entries: [string, TableEntry][], takesNewTables = false): TableGate => ({ entries: new Map(entries), takesNewTables });

  it('without a registry, the configured tables decide (as before the registry)', () => {
    expect(decide({ entries: null, takesNewTables: true }, lsn(1), 's', 'a')).toBe('apply');
    expect(decide({ entries: null, legacy: new Set(['s.b']), takesNewTables: false }, lsn(1), 's', 'a')).toBe('skip');
    expect(decide({ entries: null, legacy: new Set(['s.a']), takesNewTables: false }, lsn(1), 's', 'a')).toBe('apply');
  });

  it('a table created on the source joins a replica that takes every table, not one with a list', () => {
    expect(decide(gate([]), lsn(1), 's', 'new', true)).toBe('unknown');
    expect(decide(gate([], true), lsn(1), 's', 'new', true)).toBe('apply');
    expect(decide(gate([], true), lsn(1), 's', 'new', false)).toBe('unknown');
  });

  it('splits a truncate of a ready and a joining table into what is applied and what is kept', () => {
    const g = gate([
      [tableKey('s', 'a'), { state: 'ready', from: ZERO_LSN }],
      [tableKey('s', 'j'), { state: 'copying', from: ZERO_LSN }],
    ]);
    const m = message({ id: 5, changes: [{ t: 'a', truncate: false }] });
    m.relations.j = rel('j');
    m.changes.push({ op: 'truncate', rels: ['a', 'j'], cascade: false, restartIdentity: false } as never);
    const r = route(g, m);
    expect(r.apply?.changes).toEqual([m.changes[0], { ...m.changes[1], rels: ['a'] }]);
    expect(r.pend).toEqual({ keys: [tableKey('s', 'j')], m: { ...m, changes: [{ ...m.changes[1], rels: ['j'] }] } });
  });

  it('a schema change goes with the table it names before the change', () => {
    const g = gate([[tableKey('s', 'j'), { state: 'copying', from: lsn(3) }]]);
    const shape = (table: string) => ({ schema: 's', table, columns: [] });
    const m: TxnMessage = { ...message({ id: 4, changes: [] }), changes: [{ op: 'schema', oid: 1, command: 'ALTER TABLE', before: shape('j'), after: shape('k'), fills: {}, unfilled: [] }] };
    expect(route(g, m).pend?.keys).toEqual([tableKey('s', 'j')]);
    expect(route(g, { ...m, lsn: lsn(3) }).pend).toBeNull(); // at the snapshot: in it
  });

  it('follows a table created or renamed for the rows after it in the same chunk (found by review: they were left out)', () => {
    const shape = (table: string) => ({ schema: 's', table, columns: [] });
    const ready = gate([[tableKey('s', 'a'), { state: 'ready', from: ZERO_LSN }]], true);
    const m: TxnMessage = {
      ...message({ id: 9, changes: [] }),
      relations: { j: rel('j'), u: rel('u') },
      changes: [
        { op: 'schema', oid: 1, command: 'CREATE TABLE', before: null, after: shape('u'), fills: {}, unfilled: [] },
        { op: 'insert', rel: 'u', new: { id: '1' } },
        { op: 'schema', oid: 2, command: 'ALTER TABLE', before: shape('a'), after: shape('j'), fills: {}, unfilled: [] },
        { op: 'insert', rel: 'j', new: { id: '2' } },
      ],
    };
    const r = route(ready, m);
    expect(r.apply).toBe(m);
    expect(r.unknown).toEqual([]);
    expect([...r.entries!.keys()].sort()).toEqual([tableKey('s', 'j'), tableKey('s', 'u')].sort());
    // A replica with a list takes a created table only if the list names it.
    expect(route({ ...ready, takesNewTables: false, legacy: new Set(['s.a']) }, m).unknown).toContain(tableKey('s', 'u'));
    expect(route({ ...ready, takesNewTables: false, legacy: new Set(['s.a', 's.u']) }, m).unknown).toEqual([]);
  });
  it('issue 26.8: follows a joining table renamed during its copy, so its rows under the new name are kept, not unknown', () => {
    const shape = (table: string) => ({ schema: 's', table, columns: [] });
    const g = gate([[tableKey('s', 'j'), { state: 'copying', from: lsn(3) }]]);
    const rename: TxnMessage = { ...message({ id: 4, changes: [] }), changes: [{ op: 'schema', oid: 1, command: 'ALTER TABLE', before: shape('j'), after: shape('k'), fills: {}, unfilled: [] }] };
    const r = route(g, rename);
    expect(r.pend?.keys).toEqual([tableKey('s', 'j')]);
    expect([...r.entries!.entries()]).toEqual([[tableKey('s', 'k'), { state: 'copying', from: lsn(3) }]]);
    const later: TxnMessage = { ...message({ id: 5, changes: [] }), relations: { k: { ...rel('j'), table: 'k' } }, changes: [{ op: 'insert', rel: 'k', new: { id: '1' } }] };
    const r2 = route({ ...g, entries: r.entries }, later);
    expect(r2.unknown).toEqual([]);
    expect(r2.pend?.keys).toEqual([tableKey('s', 'k')]);
  });
});
