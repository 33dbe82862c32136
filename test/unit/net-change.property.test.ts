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
import { KeyNotUnique, keyOf, reduceKeyed } from '../../src/apply/net-change';
import { rowIdentity } from '../../src/capture/trigger/events';

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

/**
 * One step of a source history, chosen against the source's current rows so the history is valid:
 * 0 insert, 1 update (maybe moving the key), 2 delete, 3 a shift — UPDATE … SET k1 = k1 ± 1 WHERE k2 = …,
 * rows taken in the one order an immediate key lets the statement pass (skipped where none does) —,
 * 4 a swap of two rows' keys through a free key (three moves).
 */
type Step = { kind: number; pick: number; key: [number, number]; a: string | null; big: string; moveKey: boolean; sendBig: boolean };
const step = fc.record({
  kind: fc.integer({ min: 0, max: 4 }),
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
    const move = (row: Row, to: Row) => {
      const next: Row = { ...row, ...to, a: s.a, big: s.sendBig ? s.big : row.big };
      const sent: Row = { ...next };
      if (!s.sendBig && next.big === row.big) delete sent.big;
      changes.push({ op: 'update', rel: 't', old: { k1: row.k1, k2: row.k2 }, new: sent });
      src.delete(keyOf(KEYS, row)!);
      src.set(keyOf(KEYS, next)!, next);
    };
    if (s.kind === 3) {
      const d = s.moveKey ? 1 : -1;
      const set = rows.filter((r) => r.k2 === String(s.key[1])).sort((x, y) => d * (Number(y.k1) - Number(x.k1)));
      const moved = new Set(set.map((r) => r.k1));
      if (set.some((r) => !moved.has(String(Number(r.k1) + d)) && !free([Number(r.k1) + d, s.key[1]]))) continue; // a row outside the set holds a target
      for (const r of set) move(r, { k1: String(Number(r.k1) + d) });
      continue;
    }
    if (s.kind === 4) {
      const x = rows[s.pick % rows.length];
      const y = rows[(s.pick + 1) % rows.length];
      if (x === y || !free(s.key)) continue;
      const tmp = { k1: String(s.key[0]), k2: String(s.key[1]) };
      move(x, tmp);
      move(y, { k1: x.k1, k2: x.k2 });
      move(src.get(keyOf(KEYS, tmp)!)!, { k1: y.k1, k2: y.k2 });
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
    let moves = 0;
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
        if (changes.some((c) => c.op === 'update' && KEYS.some((k) => k in c.new && c.new[k] !== c.old[k]))) moves += 1;
        expect(sorted(got)).toEqual(sorted(want));
      }),
      { numRuns: 3000, seed: 20261202 },
    );
    // Not a vacuous pass: most batches reduce, many of them with keys that move (shifts, swaps, moves).
    expect(reduced).toBeGreaterThan(columns ? declined : 1000);
    expect(moves).toBeGreaterThan(columns ? 500 : 100); // without the column list only rows inserted in the run may move
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
  it('throws KeyNotUnique where the changes show one key naming two rows (only a key checked at commit lets a source do that)', () => {
    const k = (k1: string) => ({ k1, k2: '0' });
    const row = (k1: string) => ({ ...k(k1), a: null, big: 'x' });
    // A row given key 2 while the row inserted there still holds it.
    expect(() => reduceKeyed(KEYS, [{ op: 'insert', rel: 't', new: row('2') }, { op: 'update', rel: 't', old: k('1'), new: row('2') }], COLS)).toThrow(KeyNotUnique);
    // A second insert of a key the run already gave a row.
    expect(() => reduceKeyed(KEYS, [{ op: 'update', rel: 't', old: k('1'), new: { ...row('1'), a: 'p' } }, { op: 'insert', rel: 't', new: row('1') }])).toThrow(KeyNotUnique);
    // A change to a key the run had emptied (the other row holding it was deleted).
    expect(() => reduceKeyed(KEYS, [{ op: 'delete', rel: 't', old: k('2') }, { op: 'delete', rel: 't', old: k('2') }])).toThrow(KeyNotUnique);
    expect(() => reduceKeyed(KEYS, [{ op: 'update', rel: 't', old: k('2'), new: row('3') }, { op: 'update', rel: 't', old: k('2'), new: { ...k('2'), a: 'q' } }], COLS)).toThrow(KeyNotUnique);
  });
});

describe('the row identity capture names rows by (src/capture/trigger/events.ts)', () => {
  it('is an immediate primary key, else an immediate replica identity index, else the whole row — never a DEFERRABLE key', () => {
    const ix = (cols: number[], primary: boolean, immediate: boolean, replident = false) => ({ cols, primary, immediate, replident });
    expect(rowIdentity([ix([1], true, true)])).toEqual({ identity: 'default', cols: [1] });
    expect(rowIdentity([ix([2, 3], false, true, true), ix([1], true, true)])).toEqual({ identity: 'default', cols: [1] });
    expect(rowIdentity([ix([1], true, false), ix([2, 3], false, true, true)])).toEqual({ identity: 'index', cols: [2, 3] });
    expect(rowIdentity([ix([1], true, false)])).toEqual({ identity: 'full', cols: [] });
    expect(rowIdentity([])).toEqual({ identity: 'full', cols: [] });
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

/**
 * Keys checked at commit (a DEFERRABLE primary key): statements that shift,
 * mirror or swap keys, taking rows in any order, so that in between two rows
 * may hold one key (only the commit checks it). The table is described as
 * capture describes it (rowIdentity), its changes carry the old row as that
 * identity names it, and they reach the replica as the applier sends them
 * (a window's net change, else each transaction in order: by key, every row
 * holding it, as SQL does; by whole row, one row). The replica's key is
 * deferrable too, and it must end with the source's rows — or refuse loudly
 * (KeyNotUnique), never hold other rows.
 */
describe('keys that move on a key checked at commit', () => {
  type SrcRow = { rid: number; id: number; v: string };
  type Stmt = { kind: number; lo: number; span: number; d: number; order: number[] };
  const stmt = fc.record({
    kind: fc.integer({ min: 0, max: 5 }),
    lo: fc.integer({ min: 0, max: 7 }),
    span: fc.integer({ min: 0, max: 4 }),
    d: fc.integer({ min: -2, max: 2 }),
    order: fc.array(fc.nat(), { maxLength: 8 }),
  });
  const txn = fc.array(stmt, { minLength: 1, maxLength: 3 });

  /** Rows taken in a generated order (the source's physical order is anyone's guess). */
  const inOrder = <T>(xs: T[], order: number[]) => {
    const rest = [...xs];
    const out: T[] = [];
    for (let i = 0; rest.length; i++) out.push(rest.splice((order[i] ?? 0) % rest.length, 1)[0]);
    return out;
  };

  /** The source: each statement's rows changed one by one (row changes in that order); a transaction whose end repeats a key rolls back. */
  function source(n: number, txns: Stmt[][]) {
    let rows: SrcRow[] = Array.from({ length: n }, (_, i) => ({ rid: i, id: i + 1, v: `v${i + 1}` }));
    let rid = n;
    const committed: { old: SrcRow | null; new: SrcRow | null }[][] = [];
    for (const t of txns) {
      const before = rows.map((r) => ({ ...r }));
      const log: { old: SrcRow | null; new: SrcRow | null }[] = [];
      for (const s of t) {
        const hit = inOrder(rows.filter((r) => r.id >= s.lo && r.id <= s.lo + s.span), s.order);
        const set = (r: SrcRow, id: number, v = r.v) => {
          const old = { ...r };
          r.id = id;
          r.v = v;
          log.push({ old, new: { ...r } });
        };
        if (s.kind === 0) for (const r of hit) set(r, r.id + (s.d || 1)); // shift
        else if (s.kind === 1) for (const r of hit) set(r, 2 * s.lo + s.span - r.id); // mirror (a swap when span is 1)
        else if (s.kind === 2) for (const r of hit) set(r, r.id, `${r.v}'`); // a value, by key
        else if (s.kind === 3) {
          const r = { rid: rid++, id: s.lo, v: `n${rid}` };
          rows.push(r);
          log.push({ old: null, new: { ...r } });
        } else if (s.kind === 4) {
          for (const r of hit) log.push({ old: { ...r }, new: null });
          rows = rows.filter((r) => !hit.includes(r));
        } else for (const r of hit) set(r, r.id + 10 * (s.d || 1)); // far away and back: a key freed, taken again
      }
      if (new Set(rows.map((r) => r.id)).size !== rows.length) rows = before; // the commit's check refuses it
      else committed.push(log);
    }
    return { start: Array.from({ length: n }, (_, i) => ({ id: String(i + 1), v: `v${i + 1}` })), committed, end: rows };
  }

  /** The replica, applying what the applier sends: rows as a list (a deferrable key may repeat until commit). */
  function replica(start: Row[], txns: TxnMessage[]): Row[] {
    let rows = start.map((r) => ({ ...r }));
    const matches = (identity: RelationInfo['identity'], keys: string[], old: Row) => (r: Row) =>
      (identity === 'full' ? Object.keys(old) : keys).every((k) => r[k] === old[k]);
    const inOrderApply = (m: TxnMessage) => {
      for (const ch of m.changes) {
        if (ch.op === 'truncate' || ch.op === 'schema') continue;
        const r = m.relations[ch.rel];
        const keys = r.columns.filter((c) => c.key).map((c) => c.name);
        if (ch.op === 'insert') rows.push({ ...ch.new });
        else {
          const hit = matches(r.identity, keys, ch.old);
          // By key: every row holding it (UPDATE … WHERE id = $1). By whole row: one row (pgferry picks one ctid).
          const targets = r.identity === 'full' ? rows.filter(hit).slice(0, 1) : rows.filter(hit);
          if (ch.op === 'delete') rows = rows.filter((x) => !targets.includes(x));
          else for (const x of targets) Object.assign(x, ch.new);
        }
      }
    };
    let window: TxnMessage[] = [];
    const flush = () => {
      const tables = window.length > 1 ? reduceWindow(window) : null;
      if (!tables) window.forEach(inOrderApply);
      else {
        for (const t of tables) for (const n of t.net) if (n.deleteFirst) rows = rows.filter((x) => !t.keys.every((k) => x[k] === n.key[k]));
        for (const t of tables)
          for (const n of t.net) {
            if (n.write?.op === 'insert') rows.push({ ...n.write.row });
            else if (n.write) for (const x of rows.filter((x) => t.keys.every((k) => x[k] === n.key[k]))) Object.assign(x, n.write.row);
          }
      }
      window = [];
    };
    for (const m of txns) {
      if (windowable(m)) window.push(m);
      else {
        flush();
        inOrderApply(m);
      }
    }
    flush();
    return rows;
  }

  const bag = (rows: Row[]) => rows.map((r) => `${r.id}:${r.v}`).sort();

  // A deferrable primary key on column 1 (id), described as capture describes it.
  const { identity, cols } = rowIdentity([{ cols: [1], primary: true, immediate: false, replident: false }]);
  const rel: RelationInfo = {
    schema: 'public',
    table: 'kd',
    identity,
    columns: [
      { name: 'id', type: 'integer', key: identity === 'full' || cols.includes(1) },
      { name: 'v', type: 'text', key: identity === 'full' },
    ],
  };
  const keys = rel.columns.filter((c) => c.key).map((c) => c.name);
  const image = (r: SrcRow, keysOnly: boolean): Row => {
    const row: Row = { id: String(r.id), v: r.v };
    return keysOnly && identity !== 'full' ? Object.fromEntries(keys.map((k) => [k, row[k]])) : row;
  };
  /** The source's history of `n` rows, through capture and apply: the replica's rows equal the source's, or apply refused loudly. */
  function check(n: number, stmts: Stmt[][]): 'equal' | 'refused' {
    const { start, committed, end } = source(n, stmts);
    const txns = committed
      .map((log, i): TxnMessage => ({
        v: 1, source: 's', xid: i, lsn: `0/${(i + 1).toString(16)}`, endLsn: '', commitTime: '', seq: 0, last: true,
        relations: { kd: rel },
        changes: log.map((e): RowChange =>
          !e.old ? { op: 'insert', rel: 'kd', new: image(e.new!, false) }
          : !e.new ? { op: 'delete', rel: 'kd', old: image(e.old, true) }
          : { op: 'update', rel: 'kd', old: image(e.old, true), new: image(e.new, false) }),
      }))
      .filter((m) => m.changes.length);
    let got: Row[];
    try {
      got = replica(start, txns);
    } catch (err) {
      if (err instanceof KeyNotUnique) return 'refused'; // the replica stops there
      throw err;
    }
    expect(bag(got)).toEqual(bag(end.map((r) => image(r, false))));
    return 'equal';
  }
  const moves = (stmts: Stmt[][]) => stmts.some((t) => t.some((s) => s.kind !== 2 && s.kind < 3));

  it('the replica ends with the source rows (or stops loudly), whatever order the statements took rows in', () => {
    let moved = 0;
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 6 }), fc.array(txn, { minLength: 1, maxLength: 5 }), (n, stmts) => {
        if (check(n, stmts) === 'equal' && moves(stmts)) moved += 1;
      }),
      { numRuns: 3000, seed: 20261206 },
    );
    expect(moved).toBeGreaterThan(1000);
  });

  // Found by the property before capture named a deferrable key's rows by their whole value: one
  // transaction (applied in order, by key) UPDATE … SET id = id + 1 of rows 1 and 2 gave both rows key 3.
  // And the reported recipe: shift, mirror, swap, three transactions in one window (two rows left of six).
  const shift = (lo: number, span: number, d = 1): Stmt => ({ kind: 0, lo, span, d, order: [] });
  const mirror = (lo: number, span: number): Stmt => ({ kind: 1, lo, span, d: 0, order: [] });
  it.each([
    ['UPDATE … SET id = id + 1, one transaction', 2, [[shift(0, 2), shift(0, 0)]]],
    ['shift, mirror and swap in one window (the reported recipe)', 6, [[shift(1, 5)], [mirror(1, 6)], [mirror(1, 1)]]],
  ] as const)('regression: %s', (_name, n, stmts) => {
    expect(check(n, stmts as unknown as Stmt[][])).toBe('equal');
  });
});
