/**
 * Net-change reduction (src/apply/net-change.ts) against an oracle: random
 * valid source histories of one keyed table — inserts, updates that may move
 * the key or leave a TOASTed column unsent (unchanged), deletes, a key
 * deleted and inserted again — applied one by one, versus the reduced form
 * applied set-wise (every delete, then every write). Same final table, or
 * the reducer says it cannot (null) for the cases it documents.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { RelationInfo, Row, RowChange, TxnMessage } from '../../src/change';
import { reduceWindow, windowable } from '../../src/apply/net-apply';
import { keyOf, reduceKeyed } from '../../src/apply/net-change';

const KEYS = ['k1', 'k2'];
const COLS = ['k1', 'k2', 'a', 'big'];
type Table = Map<string, Row>;

/** Apply changes one by one, as the replica does without reduction. */
function applyInOrder(start: Table, changes: RowChange[]): Table {
  const t = new Map(start);
  for (const ch of changes) {
    if (ch.op === 'insert') {
      const k = keyOf(KEYS, ch.new)!;
      if (t.has(k)) throw new Error(`oracle: insert of existing ${k}`);
      t.set(k, { ...ch.new });
    } else if (ch.op === 'update') {
      const k = keyOf(KEYS, ch.old)!;
      const row = t.get(k);
      if (!row) throw new Error(`oracle: update of missing ${k}`);
      const next = { ...row, ...ch.new };
      t.delete(k);
      t.set(keyOf(KEYS, next)!, next);
    } else {
      t.delete(keyOf(KEYS, ch.old)!);
    }
  }
  return t;
}

/** Apply the reduced form: every delete first, then every write (what one DELETE … USING and one upsert do). */
function applyReduced(start: Table, changes: RowChange[], columns?: string[]): Table | null {
  const net = reduceKeyed(KEYS, changes, columns);
  if (!net) return null;
  const t = new Map(start);
  for (const n of net) if (n.deleteFirst) t.delete(keyOf(KEYS, n.key)!);
  for (const n of net) {
    if (!n.write) continue;
    const k = keyOf(KEYS, n.write.row)!;
    if (n.write.op === 'insert') {
      if (t.has(k)) throw new Error(`reduced: insert of existing ${k}`);
      if (Object.keys(n.write.row).sort().join() !== [...COLS].sort().join()) throw new Error(`reduced: insert without every column: ${JSON.stringify(n.write.row)}`);
      t.set(k, { ...n.write.row });
    } else {
      const row = t.get(k);
      if (!row) throw new Error(`reduced: update of missing ${k}`);
      t.set(k, { ...row, ...n.write.row });
    }
  }
  return t;
}

const sorted = (t: Table) => [...t.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

/** One step of a source history, chosen against the source's current rows so the history is valid. */
type Step = { kind: number; pick: number; key: [number, number]; a: string | null; big: string; moveKey: boolean; sendBig: boolean };
const step = fc.record({
  kind: fc.integer({ min: 0, max: 2 }),
  pick: fc.nat(),
  key: fc.tuple(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 2 })),
  a: fc.option(fc.string({ maxLength: 3 }), { nil: null }),
  big: fc.constantFrom('x', 'y', 'z'),
  moveKey: fc.boolean(),
  sendBig: fc.boolean(),
});

function history(initial: Row[], steps: Step[]): { start: Table; changes: RowChange[] } {
  const start: Table = new Map();
  for (const r of initial) start.set(keyOf(KEYS, r)!, r);
  const src = new Map(start);
  const changes: RowChange[] = [];
  const free = (key: [number, number]) => !src.has(JSON.stringify(key.map(String)));
  for (const s of steps) {
    const rows = [...src.values()];
    const keyRow = { k1: String(s.key[0]), k2: String(s.key[1]) };
    if (s.kind === 0 || !rows.length) {
      if (!free(s.key)) continue;
      const row = { ...keyRow, a: s.a, big: s.big };
      changes.push({ op: 'insert', rel: 't', new: row });
      src.set(keyOf(KEYS, row)!, row);
      continue;
    }
    const row = rows[s.pick % rows.length];
    const old = { k1: row.k1, k2: row.k2 };
    if (s.kind === 2) {
      changes.push({ op: 'delete', rel: 't', old });
      src.delete(keyOf(KEYS, row)!);
      continue;
    }
    const next: Row = { ...row, a: s.a, big: s.sendBig ? s.big : row.big };
    if (s.moveKey && free(s.key)) Object.assign(next, keyRow);
    // pgoutput leaves an unchanged TOASTed value out of the new image.
    const sent: Row = { ...next };
    if (!s.sendBig && next.big === row.big) delete sent.big;
    changes.push({ op: 'update', rel: 't', old, new: sent });
    src.delete(keyOf(KEYS, row)!);
    src.set(keyOf(KEYS, next)!, next);
  }
  return { start, changes };
}

const initialRows = fc.uniqueArray(fc.tuple(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 2 }), fc.constantFrom('x', 'y')), {
  selector: ([k1, k2]) => `${k1}/${k2}`,
  maxLength: 8,
});

describe('net-change reduction', () => {
  it.each([
    ['without the column list', undefined],
    ['with the column list (an update sending every column is a whole image)', COLS],
  ])('applied set-wise, equals applying every change in order (or declines, only where it documents it): %s', (_name, columns) => {
    let declined = 0;
    let reduced = 0;
    fc.assert(
      fc.property(initialRows, fc.array(step, { maxLength: 40 }), (init, steps) => {
        const { start, changes } = history(
          init.map(([k1, k2, big]) => ({ k1: String(k1), k2: String(k2), a: null, big })),
          steps,
        );
        const want = applyInOrder(start, changes);
        const got = applyReduced(start, changes, columns);
        if (got === null) {
          declined += 1;
          // Only a key change of a row whose full image is unknown (it existed before and its TOASTed column was not sent).
          expect(changes.some((c) => c.op === 'update' && KEYS.some((k) => c.new[k] !== undefined && c.new[k] !== c.old[k]))).toBe(true);
          return;
        }
        reduced += 1;
        expect(sorted(got)).toEqual(sorted(want));
      }),
      { numRuns: 3000, seed: 20261202 },
    );
    expect(reduced).toBeGreaterThan(declined); // the reduction applies to most batches, not a vacuous pass
  });

  // Counterexamples fast-check shrank to while the property was checked against mutated reducers
  // (a later image merged under an earlier one; a delete of a row inserted and updated in the run
  // not issued): kept as regression cases.
  it.each([
    ['insert then update of the same key', [] as [number, number, string][], [
      { kind: 0, pick: 0, key: [0, 0], a: null, big: 'x', moveKey: false, sendBig: false },
      { kind: 1, pick: 0, key: [0, 0], a: '', big: 'x', moveKey: false, sendBig: false },
    ]],
    ['update then delete of a row that existed before', [[0, 0, 'x']] as [number, number, string][], [
      { kind: 1, pick: 0, key: [0, 0], a: null, big: 'x', moveKey: false, sendBig: false },
      { kind: 2, pick: 0, key: [0, 0], a: null, big: 'x', moveKey: false, sendBig: false },
    ]],
  ] as const)('regression: %s', (_name, init, steps) => {
    const { start, changes } = history(
      init.map(([k1, k2, big]) => ({ k1: String(k1), k2: String(k2), a: null, big })),
      steps as unknown as Step[],
    );
    expect(sorted(applyReduced(start, changes)!)).toEqual(sorted(applyInOrder(start, changes)));
  });

  it('writes each key at most once, deletes before it, and keeps a delete then insert of one key', () => {
    const k = { k1: '1', k2: '0' };
    const changes: RowChange[] = [
      { op: 'update', rel: 't', old: k, new: { ...k, a: 'p' } },
      { op: 'update', rel: 't', old: k, new: { ...k, a: 'q' } }, // big not sent: unchanged TOAST
      { op: 'delete', rel: 't', old: k },
      { op: 'insert', rel: 't', new: { ...k, a: 'r', big: 'x' } },
      { op: 'update', rel: 't', old: k, new: { ...k, a: 's' } },
    ];
    expect(reduceKeyed(KEYS, changes)).toEqual([{ key: k, deleteFirst: true, write: { op: 'insert', row: { ...k, a: 's', big: 'x' } } }]);
    // Updates only: the columns sent, for a row that existed before (big left untouched).
    expect(reduceKeyed(KEYS, changes.slice(0, 2))).toEqual([{ key: k, deleteFirst: false, write: { op: 'update', row: { ...k, a: 'q' } } }]);
  });

  it('declines a key change of a row whose unsent TOASTed column it cannot know, and a change without its key', () => {
    expect(reduceKeyed(KEYS, [{ op: 'update', rel: 't', old: { k1: '1', k2: '0' }, new: { k1: '2', k2: '0', a: 'p' } }])).toBeNull();
    expect(reduceKeyed(KEYS, [{ op: 'delete', rel: 't', old: { k1: '1' } }])).toBeNull();
    expect(reduceKeyed([], [])).toBeNull();
  });
});

/**
 * A window of whole transactions (src/apply/net-apply.ts): the keyed table's
 * history above, split into transactions at random, with inserts into a
 * keyless table (no key) and a REPLICA IDENTITY FULL one mixed in. Applied
 * as reduceWindow's result (per table: deletes, then writes), the keyed
 * table equals in-order apply and each keyless table holds the same
 * multiset of rows.
 */
describe('net-change of a window with keyless tables', () => {
  const col = (name: string, key = false) => ({ name, type: 'text', key });
  const rels: Record<string, RelationInfo> = {
    t: { schema: 'public', table: 't', identity: 'default', columns: [col('k1', true), col('k2', true), col('a'), col('big')] },
    h: { schema: 'public', table: 'h', identity: 'default', columns: [col('x'), col('y')] },
    f: { schema: 'public', table: 'f', identity: 'full', columns: [col('x', true), col('y')] },
  };
  const txnOf = (changes: RowChange[], i: number): TxnMessage => ({
    v: 1, source: 's', xid: i, lsn: `0/${(i + 1).toString(16)}`, endLsn: '', commitTime: '', seq: 0, last: true, relations: rels, changes,
  });
  const bag = (rows: Row[]) => rows.map((r) => JSON.stringify(r)).sort();

  it('equals in-order apply, keyless rows as a multiset', () => {
    let windows = 0;
    fc.assert(
      fc.property(
        initialRows,
        fc.array(step, { maxLength: 30 }),
        fc.array(fc.record({ at: fc.nat(), table: fc.constantFrom('h', 'f'), y: fc.constantFrom('1', '2') }), { maxLength: 10 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        (init, steps, keyless, cuts) => {
          const { start, changes } = history(init.map(([k1, k2, big]) => ({ k1: String(k1), k2: String(k2), a: null, big })), steps);
          const all: RowChange[] = changes.map((c) => ({ ...c, rel: 't' }));
          keyless.forEach((k, i) => all.splice(k.at % (all.length + 1), 0, { op: 'insert', rel: k.table, new: { x: String(i), y: k.y } }));
          const bounds = [...new Set(cuts.map((c) => c % (all.length + 1)))].sort((a, b) => a - b);
          const txns: TxnMessage[] = [];
          let from = 0;
          for (const b of [...bounds, all.length]) {
            if (b > from) txns.push(txnOf(all.slice(from, b), txns.length));
            from = Math.max(from, b);
          }
          for (const m of txns) expect(windowable(m)).toBe(true);
          const tables = reduceWindow(txns);
          if (!tables) return; // declined: a key change of a row whose full image is unknown (tested above)
          windows += 1;
          const keyed = applyInOrder(start, all.filter((c) => c.rel === 't'));
          const got = new Map(start);
          const net = tables.find((t) => t.rel.table === 't')?.net ?? [];
          for (const n of net) if (n.deleteFirst) got.delete(keyOf(KEYS, n.key)!);
          for (const n of net) if (n.write) got.set(keyOf(KEYS, n.write.row)!, { ...(got.get(keyOf(KEYS, n.write.row)!) ?? {}), ...n.write.row });
          expect(sorted(got)).toEqual(sorted(keyed));
          for (const name of ['h', 'f']) {
            const want = all.flatMap((c) => (c.rel === name && c.op === 'insert' ? [c.new] : []));
            const rows = (tables.find((t) => t.rel.table === name)?.net ?? []).map((n) => n.write!.row);
            expect(bag(rows)).toEqual(bag(want));
          }
        },
      ),
      { numRuns: 2000, seed: 20261203 },
    );
    expect(windows).toBeGreaterThan(1000);
  });

  it('keeps a transaction that updates or deletes a keyless row out of the window', () => {
    expect(windowable(txnOf([{ op: 'insert', rel: 'h', new: { x: '1', y: '1' } }], 0))).toBe(true);
    expect(windowable(txnOf([{ op: 'update', rel: 'f', old: { x: '1', y: '1' }, new: { x: '1', y: '2' } }], 1))).toBe(false);
    expect(windowable(txnOf([{ op: 'delete', rel: 'h', old: { x: '1', y: '1' } }], 2))).toBe(false);
  });
});
