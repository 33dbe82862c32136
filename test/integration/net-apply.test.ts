/**
 * Net-change apply (src/apply/net-apply.ts, applier.ts) against a real
 * replica, driven by crafted logs: a seeded hot-row history of many small
 * transactions (keys updated again and again, moved, deleted and inserted
 * again, TOASTed columns left unsent) lands exactly as one-by-one apply
 * would leave it — compared with an oracle and with net-change turned off;
 * a replica-only unique constraint that the set form trips falls back to
 * ordered apply; a row the replica refuses inside a window stops the replica
 * at that transaction with everything before it applied — also when that
 * window was being written while the next one filled (a batch of several
 * windows, applier.ts `sendWindow`).
 */
import { describe, expect, it, vi } from 'vitest';
import { Applier } from '../../src/apply/applier';
import type { Change, RelationInfo, Row, TxnMessage } from '../../src/change';
import { relKey } from '../../src/change';
import { RejectedChangeError } from '../../src/errors';
import { CraftedLog, useCraftedLog, txn } from '../helpers/crafted-log';

const HOT: RelationInfo = {
  schema: 'public',
  table: 'hot',
  identity: 'default',
  columns: [
    { name: 'id', type: 'integer', key: true },
    { name: 'a', type: 'text', key: false },
    { name: 'big', type: 'text', key: false },
  ],
};
const REL = relKey('public', 'hot');
const SCHEMA = 'CREATE TABLE hot (id int PRIMARY KEY, a text, big text);';

/** A seeded PRNG (mulberry32): the same history on every run; PGFERRY_SEED replays another. */
function rng(seed: number) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Rows 1..12, on the source and the replica before the history starts. */
const INITIAL: Row[] = Array.from({ length: 12 }, (_, i) => ({ id: String(i + 1), a: `initial${i + 1}`, big: `big-${i + 1}` }));

/** A valid source history of `n` small transactions on few keys, starting from INITIAL, and the table it leaves (the oracle). */
function hotHistory(seed: number, n: number, startAt: number): { txns: TxnMessage[]; final: Map<string, Row> } {
  const r = rng(seed);
  const src = new Map<string, Row>(INITIAL.map((row) => [row.id as string, { ...row }]));
  const txns: TxnMessage[] = [];
  for (let t = 0; t < n; t++) {
    const changes: Change[] = [];
    for (let k = 1 + Math.floor(r() * 3); k > 0; k--) {
      const id = String(1 + Math.floor(r() * 12));
      const row = src.get(id);
      const roll = r();
      if (!row) {
        const fresh = { id, a: `a${t}`, big: `big-${id}-${t}` };
        changes.push({ op: 'insert', rel: REL, new: fresh });
        src.set(id, fresh);
      } else if (roll < 0.15) {
        changes.push({ op: 'delete', rel: REL, old: { id } });
        src.delete(id);
      } else if (roll < 0.25) {
        const to = String(1000 + t * 10 + k); // a key change to a key never used: the whole image is sent (big changes too)
        const moved = { id: to, a: `moved${t}`, big: `big-${to}` };
        changes.push({ op: 'update', rel: REL, old: { id }, new: moved });
        src.delete(id);
        src.set(to, moved);
      } else {
        const next = { ...row, a: roll < 0.6 ? `u${t}` : null };
        const sent: Row = { id, a: next.a }; // big unchanged and TOASTed: not sent
        if (roll > 0.9) sent.big = next.big = `big-${id}-${t}`;
        changes.push({ op: 'update', rel: REL, old: { id }, new: sent });
        src.set(id, next);
      }
    }
    txns.push(txn(startAt + t * 0x100, changes, { rels: [HOT] }));
  }
  return { txns, final: src };
}

const sortedRows = (m: Map<string, Row>) =>
  [...m.values()].map((x) => ({ id: Number(x.id), a: x.a, big: x.big })).sort((p, q) => p.id - q.id);

describe('net-change apply', () => {
  let log: CraftedLog;
  useCraftedLog(SCHEMA, (l) => (log = l));

  /** Apply until caught up, in small batches (so rows outlive a window); the number of transactions applied as net change. */
  const applyAll = async (netChange: boolean) => {
    let net = 0;
    for (let i = 0; i < 200; i++) {
      const r = await log.apply({ netChange, maxChanges: 40 });
      net += r.netTxns ?? 0;
      if (r.caughtUp) return net;
    }
    throw new Error('apply did not catch up');
  };

  it('a hot-row history of 600 small transactions lands exactly as one-by-one apply leaves it', async () => {
    const seed = Number(process.env.PGFERRY_SEED ?? 20261202);
    const { txns, final } = hotHistory(seed, 600, 0x1000);
    const fill = () => log.cluster.withClient(log.db, (c) => c.query(`INSERT INTO hot SELECT id::int, a, big FROM jsonb_to_recordset($1::jsonb) AS t(id text, a text, big text)`, [JSON.stringify(INITIAL)]));
    await fill();
    await log.publish(...txns);
    const net = await applyAll(true);
    expect(await log.rows('SELECT id, a, big FROM hot ORDER BY id'), `seed ${seed}`).toEqual(sortedRows(final));
    expect(net, 'transactions applied as net change (the rest fell back to ordered apply)').toBeGreaterThan(txns.length * 0.9);
    // And the same log applied change by change gives the same table (the oracle is the source itself).
    await log.cluster.withClient(log.db, (c) => c.query('TRUNCATE hot; DELETE FROM pgferry.progress'));
    await fill();
    expect(await applyAll(false)).toBe(0);
    expect(await log.rows('SELECT id, a, big FROM hot ORDER BY id')).toEqual(sortedRows(final));
  });

  it('TPC-B shape: keyed updates with an insert into a keyless history table per transaction go as net change, the history whole', async () => {
    await log.reset(`${SCHEMA} CREATE TABLE hist (id int, a text);`);
    const HIST: RelationInfo = { schema: 'public', table: 'hist', identity: 'default', columns: [{ name: 'id', type: 'integer', key: false }, { name: 'a', type: 'text', key: false }] };
    const seed = 20261204;
    const { txns, final } = hotHistory(seed, 300, 0x5000);
    const withHistory = txns.map((m, i) => ({ ...m, relations: { ...m.relations, [relKey('public', 'hist')]: HIST }, changes: [...m.changes, { op: 'insert' as const, rel: relKey('public', 'hist'), new: { id: String(i % 7), a: `h${i}` } }] }));
    await log.cluster.withClient(log.db, (c) => c.query(`INSERT INTO hot SELECT id::int, a, big FROM jsonb_to_recordset($1::jsonb) AS t(id text, a text, big text)`, [JSON.stringify(INITIAL)]));
    await log.publish(...withHistory);
    const net = await applyAll(true);
    expect(await log.rows('SELECT id, a, big FROM hot ORDER BY id'), `seed ${seed}`).toEqual(sortedRows(final));
    expect(await log.rows('SELECT id, a FROM hist ORDER BY a')).toEqual(withHistory.map((_, i) => ({ id: i % 7, a: `h${i}` })).sort((p, q) => (p.a < q.a ? -1 : 1)));
    expect(net).toBeGreaterThan(withHistory.length * 0.9);
  });

  it('a replica-only unique constraint the set form trips falls back to ordered apply, with the same result', async () => {
    await log.cluster.withClient(log.db, (c) => c.query(`ALTER TABLE hot ADD CONSTRAINT a_unique UNIQUE (a); INSERT INTO hot VALUES (1, 'x', 'b1'), (2, 'y', 'b2')`));
    // The source swaps a between rows 1 and 2 through a temporary value, in three transactions.
    await log.publish(
      txn(0x2000, [{ op: 'update', rel: REL, old: { id: '1' }, new: { id: '1', a: 'tmp' } }], { rels: [HOT] }),
      txn(0x2100, [{ op: 'update', rel: REL, old: { id: '2' }, new: { id: '2', a: 'x' } }], { rels: [HOT] }),
      txn(0x2200, [{ op: 'update', rel: REL, old: { id: '1' }, new: { id: '1', a: 'y' } }], { rels: [HOT] }),
    );
    const r = await log.apply();
    expect(r.txns).toBe(3);
    expect(r.netTxns).toBe(0); // refused in the set form, applied in order
    expect(await log.rows('SELECT id, a, big FROM hot ORDER BY id')).toEqual([
      { id: 1, a: 'y', big: 'b1' },
      { id: 2, a: 'x', big: 'b2' },
    ]);
  });

  /** Windows of these tests: small, so a batch holds several. */
  const WINDOW_CHANGES = 2_000;

  /** Publish in runs of 100 transactions (one message each): thousands of transactions, quickly. */
  const publishRuns = async (txns: TxnMessage[]) => {
    for (let i = 0; i < txns.length; i += 100) await log.publishRun(...txns.slice(i, i + 100));
  };

  it('a batch of several windows, each written while the next fills, lands exactly as its transactions one by one', async () => {
    const seed = 20261207;
    const { txns, final } = hotHistory(seed, 2400, 0x10000);
    await log.cluster.withClient(log.db, (c) => c.query(`INSERT INTO hot SELECT id::int, a, big FROM jsonb_to_recordset($1::jsonb) AS t(id text, a text, big text)`, [JSON.stringify(INITIAL)]));
    await publishRuns(txns);
    const sent = vi.spyOn(Applier.prototype as unknown as { sendWindow: () => Promise<void> }, 'sendWindow');
    try {
      const r = await log.apply({ maxChanges: 100_000, windowChanges: WINDOW_CHANGES, maxWaitMs: 60_000 });
      expect(r.txns).toBe(txns.length);
      expect(r.changes, 'one batch of several windows').toBeGreaterThan(2 * WINDOW_CHANGES);
      expect(sent.mock.calls.length, 'windows written while the next filled').toBeGreaterThanOrEqual(2);
      expect(r.netTxns).toBeGreaterThan(txns.length * 0.9);
    } finally {
      sent.mockRestore();
    }
    expect(await log.rows('SELECT id, a, big FROM hot ORDER BY id'), `seed ${seed}`).toEqual(sortedRows(final));
    expect(await log.rows(`SELECT lsn::text FROM pgferry.progress WHERE replica = 'r'`)).toEqual([{ lsn: txns[txns.length - 1].lsn }]);
  });

  it('a row refused in a window written while the next filled stops at its transaction, with every transaction before it applied', async () => {
    await log.cluster.withClient(log.db, (c) => c.query(`ALTER TABLE hot ADD CONSTRAINT no_poison CHECK (a IS DISTINCT FROM 'poison')`));
    const poison = WINDOW_CHANGES / 2; // inside the first window, which is written while the second fills
    const txns = Array.from({ length: WINDOW_CHANGES * 3 }, (_, i) =>
      txn(0x100000 + i * 0x100, [{ op: 'insert', rel: REL, new: { id: String(i + 1), a: i + 1 === poison ? 'poison' : `ok${i + 1}`, big: 'b' } }], { rels: [HOT] }),
    );
    await publishRuns(txns);
    const err = await log.apply({ maxChanges: 100_000, windowChanges: WINDOW_CHANGES, maxWaitMs: 60_000 }).catch((e) => e);
    expect(err).toBeInstanceOf(RejectedChangeError);
    expect(String(err.message)).toMatch(new RegExp(`^replica 'r': insert on public\\.hot key \\{"id":"${poison}"\\} at source position ${txns[poison - 1].lsn} was rejected: .*no_poison`));
    expect(await log.rows('SELECT count(*)::int AS n, max(id) AS last FROM hot')).toEqual([{ n: poison - 1, last: poison - 1 }]);
    expect(await log.rows(`SELECT lsn::text FROM pgferry.progress WHERE replica = 'r'`)).toEqual([{ lsn: txns[poison - 2].lsn }]);
  });

  it('a row the replica refuses inside a window stops at its transaction, with every transaction before it applied', async () => {
    await log.cluster.withClient(log.db, (c) => c.query(`ALTER TABLE hot ADD CONSTRAINT no_poison CHECK (a IS DISTINCT FROM 'poison')`));
    const ok = (at: number, id: string) => txn(at, [{ op: 'insert', rel: REL, new: { id, a: `ok${id}`, big: 'b' } }], { rels: [HOT] });
    await log.publish(ok(0x3000, '1'), ok(0x3100, '2'), txn(0x3200, [{ op: 'insert', rel: REL, new: { id: '3', a: 'poison', big: 'b' } }], { rels: [HOT] }), ok(0x3300, '4'));
    const err = await log.apply().catch((e) => e);
    expect(err).toBeInstanceOf(RejectedChangeError);
    expect(String(err.message)).toMatch(/^replica 'r': insert on public\.hot key \{"id":"3"\} at source position 0\/3200 was rejected: .*no_poison/);
    expect(await log.rows('SELECT id FROM hot ORDER BY id')).toEqual([{ id: 1 }, { id: 2 }]);
    expect(await log.rows(`SELECT lsn::text FROM pgferry.progress WHERE replica = 'r'`)).toEqual([{ lsn: '0/3100' }]);
  });
});
