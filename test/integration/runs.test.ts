import { describe, expect, it } from 'vitest';
import { CraftedLog, useCraftedLog, ins, txn } from '../helpers/crafted-log';
import { RejectedChangeError } from '../../src/errors';
import { LogCursor, START_OF_LOG, type LogPosition } from '../../src/changelog/cursor';
import { rewindReplica } from '../../src/apply/rewind';
import { retainedRange } from '../../src/changelog/stream';
import { relKey } from '../../src/change';

/**
 * Runs (issue 27): several whole source transactions in one stream message
 * (envelope version 3), read by every consumer as its transactions, each
 * once, in order, against a real stream and a real replica. A replica
 * stopped by a refused change inside a run keeps the run's transactions
 * before it; a run sent again from its middle (another capture session
 * cutting its runs another way) applies nothing twice; a subscriber's
 * position inside a run continues after it; a rewind target inside a run
 * continues from that run.
 */
const SCHEMA = `
  CREATE TABLE a (id bigint PRIMARY KEY, v text);
  CREATE TABLE b (id bigint PRIMARY KEY, v text CHECK (v <> 'bad'));
`;

describe('runs of transactions in one message', () => {
  let log: CraftedLog;
  useCraftedLog(SCHEMA, (l) => (log = l));

  let at = 0x1000;
  const next = () => (at += 0x100);
  const rowsOf = async (t: string) => ((await log.rows(`SELECT id::int, v FROM ${t} ORDER BY id`)) as { id: number; v: string }[]).map((r) => `${r.id}:${r.v}`);
  const progress = async () => (await log.rows(`SELECT lsn::text, stream_offset::int AS offset FROM pgferry.progress WHERE replica = 'r'`))[0];
  const small = (n: number, v = 'x') => txn(next(), [ins('a', { id: String(n), v })]);

  it('applies each transaction of a run once, in order, beside single transactions and chunks, and checkpoints at the run', async () => {
    // In commit order (positions grow): one transaction, a run of three, a transaction in two chunks, a run of two.
    const t = [small(1), small(2), small(3), small(4)];
    const big = next();
    const t5 = small(5);
    const upd = txn(next(), [{ op: 'update', rel: relKey('public', 'a'), old: { id: '1' }, new: { id: '1', v: 'updated' } }]);
    await log.publish(t[0]); // offset 1 (0: the stream's marker)
    await log.publishRun(t[1], t[2], t[3]); // offset 2
    await log.publish(txn(big, [ins('b', { id: '1', v: 'c0' })], { seq: 0, last: false }), txn(big, [ins('b', { id: '2', v: 'c1' })], { seq: 1, last: true })); // 3, 4
    await log.publishRun(t5, upd); // 5
    const r = await log.apply();
    expect(r.txns).toBe(7);
    expect(await rowsOf('a')).toEqual(['1:updated', '2:x', '3:x', '4:x', '5:x']);
    expect(await rowsOf('b')).toEqual(['1:c0', '2:c1']);
    expect(await progress()).toEqual({ lsn: upd.lsn, offset: 5 });
    // Read again from the checkpoint (the run at offset 5): nothing is applied twice.
    expect((await log.apply()).txns).toBe(0);
  });

  it('a refused change inside a run stops the replica after the run\'s transactions before it, and the rest follows once fixed', async () => {
    const t1 = small(1);
    const t2 = txn(next(), [ins('b', { id: '1', v: 'ok' })]);
    const bad = txn(next(), [ins('b', { id: '2', v: 'bad' })]);
    const t4 = small(4);
    await log.publishRun(t1, t2, bad, t4);
    const err = await log.apply().catch((e) => e);
    expect(err).toBeInstanceOf(RejectedChangeError);
    expect(String(err.message)).toMatch(/insert on public\.b key \{"id":"2"\}.*violates check constraint/);
    // Kept: the run's transactions before the refused one; the checkpoint is inside the run.
    expect(await rowsOf('a')).toEqual(['1:x']);
    expect(await rowsOf('b')).toEqual(['1:ok']);
    expect(await progress()).toEqual({ lsn: t2.lsn, offset: 1 });
    await log.cluster.withClient(log.db, (c) => c.query('ALTER TABLE b DROP CONSTRAINT b_v_check'));
    expect((await log.apply()).txns).toBe(2);
    expect(await rowsOf('a')).toEqual(['1:x', '4:x']);
    expect(await rowsOf('b')).toEqual(['1:ok', '2:bad']);
  });

  it('a run sent again from its middle by another capture session, cut another way, applies nothing twice', async () => {
    const t = [1, 2, 3, 4, 5, 6].map((n) => small(n));
    await log.publishRun(t[0], t[1], t[2]);
    expect((await log.apply()).txns).toBe(3);
    // Capture restarted from an acknowledged position inside that run: it sends 2..6, cut as (2), (3, 4), (5, 6).
    await log.publish(t[1]);
    await log.publishRun(t[2], t[3]);
    await log.publishRun(t[4], t[5]);
    expect((await log.apply()).txns).toBe(3);
    expect(await rowsOf('a')).toEqual(['1:x', '2:x', '3:x', '4:x', '5:x', '6:x']);
  });

  it('a subscriber reads one item per transaction of a run, and a position inside a run continues after it', async () => {
    const t = [1, 2, 3, 4].map((n) => small(n));
    await log.publishRun(...t);
    const opts = { consumer: "subscriber 's'", fix: 'start it again' };
    const read = async (from: LogPosition, n: number) => {
      const cursor = await LogCursor.open(log.rabbit, log.source, from, opts);
      const got: string[] = [];
      try {
        while (got.length < n) {
          const item = await cursor.next(3000);
          if (!item) break;
          if (item.kind === 'chunk') got.push(item.m.lsn);
        }
        return { got, position: cursor.position };
      } finally {
        await cursor.close();
      }
    };
    const first = await read(START_OF_LOG, 2);
    expect(first.got).toEqual([t[0].lsn, t[1].lsn]);
    expect(first.position).toMatchObject({ lsn: t[1].lsn, offset: 1 });
    const rest = await read(first.position, 10);
    expect(rest.got).toEqual([t[2].lsn, t[3].lsn]);
  });

  it('the stream\'s ends are a run\'s first and last transactions, and a rewind target inside a run continues from it', async () => {
    const t = [1, 2, 3, 4].map((n) => small(n, 'r'));
    await log.publishRun(t[0], t[1]);
    await log.publishRun(t[2], t[3]);
    const range = await retainedRange(log.rabbit, log.source);
    expect(range.last).toMatchObject({ offset: 2, lsn: t[3].lsn });
    const r = await rewindReplica({ rabbit: log.rabbit, source: log.source, replica: 'r', replicaUrl: log.cluster.url(log.db), to: t[2].lsn, sourceHistory: async () => 'H' });
    expect(r).toMatchObject({ lsn: t[2].lsn, offset: 2, next: t[3].lsn });
    expect((await log.apply()).txns).toBe(1);
    expect(await rowsOf('a')).toEqual(['4:r']);
  });
});


