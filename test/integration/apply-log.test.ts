import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CraftedLog, ins, txn } from '../helpers/crafted-log';

/**
 * Apply against logs written by hand (real RabbitMQ stream, real replica
 * database, the library's applyBatch): the shapes capture produces only
 * under faults, each asserting the replica's content and position.
 */
const SCHEMA = `
  CREATE TABLE a (id bigint PRIMARY KEY, v text);
  CREATE TABLE b (id bigint PRIMARY KEY, v text);
`;

describe('apply of crafted logs', () => {
  let log: CraftedLog;

  beforeAll(async () => {
    log = await CraftedLog.create(SCHEMA);
  });
  afterAll(async () => {
    await log?.close();
  });

  let at = 0x1000;
  const next = () => (at += 0x100);
  beforeEach(async () => {
    // Every test starts from an empty replica whose position is the newest message of the stream.
    await log.rows('TRUNCATE a, b');
    await log.apply();
  });

  it('defect A: small transactions before a large one re-sent from chunk 0 stay applied', async () => {
    // Before the fix, the savepoint of the large transaction was taken before the queued single-row
    // statements of the small ones were sent; the re-send rolled back to it and undid them, while
    // the checkpoint moved past them: lost, with every status saying running.
    const [s1, s2, big] = [next(), next(), next()];
    await log.publish(
      txn(s1, [ins('b', { id: '1', v: 'small 1' })]),
      txn(s2, [ins('b', { id: '2', v: 'small 2' })]),
      txn(big, [ins('a', { id: '1', v: 'big' }), ins('a', { id: '2', v: 'big' })], { seq: 0, last: false }),
      txn(big, [ins('a', { id: '3', v: 'big' })], { seq: 1, last: false }),
      // capture restarted mid-publish: the large transaction again, whole
      txn(big, [ins('a', { id: '1', v: 'big' }), ins('a', { id: '2', v: 'big' })], { seq: 0, last: false }),
      txn(big, [ins('a', { id: '3', v: 'big' })], { seq: 1, last: false }),
      txn(big, [ins('a', { id: '4', v: 'big' })], { seq: 2, last: true }),
    );
    const r = await log.apply();
    expect(r.txns).toBe(3);
    expect(await log.rows('SELECT id::int, v FROM b ORDER BY id')).toEqual([
      { id: 1, v: 'small 1' },
      { id: 2, v: 'small 2' },
    ]);
    expect(await log.rows('SELECT count(*)::int AS n FROM a')).toEqual([{ n: 4 }]);
  });

  it('defect A: small transactions before a large one whose next chunk times out stay applied, and the checkpoint names them', async () => {
    const [s1, big] = [next(), next()];
    await log.publish(txn(s1, [ins('b', { id: '7', v: 'small' })]), txn(big, [ins('a', { id: '1', v: 'big' })], { seq: 0, last: false }));
    const r = await log.apply({ chunkWaitMs: 500 });
    expect(r.txns).toBe(1);
    expect(await log.rows('SELECT id::int FROM b')).toEqual([{ id: 7 }]);
    expect(await log.rows('SELECT count(*)::int AS n FROM a')).toEqual([{ n: 0 }]);
    const progress = (await log.rows(`SELECT lsn::text FROM pgferry.progress WHERE replica = 'r'`)) as { lsn: string }[];
    expect(progress[0].lsn).toBe(r.appliedLsn);
    // The rest arrives: applied once, with nothing of it doubled.
    await log.publish(txn(big, [ins('a', { id: '1', v: 'big' })], { seq: 0, last: false }), txn(big, [ins('a', { id: '2', v: 'big' })], { seq: 1, last: true }));
    expect((await log.apply()).txns).toBe(1);
    expect(await log.rows('SELECT count(*)::int AS n FROM a')).toEqual([{ n: 2 }]);
    expect(await log.rows('SELECT id::int FROM b')).toEqual([{ id: 7 }]);
  });
});
