/**
 * verify's catch-up (src/verify/verify.ts) against a real replica database.
 * A replica whose position stands still for a second is not taken as caught
 * up unless capture is past the point and the replica holds the newest
 * transaction of the log — judging on stillness alone read a busy source's
 * lag as missing rows (CI, session 14: "public.audit: 641 missing" on a busy
 * trigger-mode source). Without that, only five quiet times of nothing
 * moving count (capture stopped, or the log unreadable).
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/migrations';
import { ProgressStore } from '../../src/apply/progress-store';
import { catchUp } from '../../src/verify/verify';
import { PgCluster } from '../helpers/pg-cluster';

/** A point the replica (at 0/500) never reaches: only the other rules can end the wait. */
const POINT = { lsn: '1/0', snap: '1000:1000:' };
const QUIET = 200;

describe('verify catch-up', () => {
  let cluster: PgCluster;
  let url: string;
  let c: pg.Client;

  beforeAll(async () => {
    cluster = await PgCluster.start({ wal_level: 'replica' });
    url = await cluster.createDatabase('replica');
    c = new pg.Client({ connectionString: url });
    await c.connect();
    await migrate(c, 'target');
    await ProgressStore.set(c, 'r', 'main', { lsn: '0/500', offset: 5, history: 'h1', stream: null });
  });
  afterAll(async () => {
    await c?.end().catch(() => undefined);
    cluster?.destroy();
  });

  /** catchUp with the given answers; resolves to whether it judged, and after how long. */
  async function run(capturedThrough: boolean, newestInLog: string | null | undefined, maxMs = 5000) {
    const asked = { captured: 0, log: 0 };
    const o = {
      source: c,
      replica: c,
      replicaName: 'r',
      capturedThrough: async () => (asked.captured++, capturedThrough),
      newestInLog: newestInLog === undefined ? undefined : async () => (asked.log++, newestInLog),
    };
    const t0 = Date.now();
    const judged = await catchUp(o, POINT, QUIET, maxMs);
    return { judged, ms: Date.now() - t0, asked };
  }

  it('capture past the point and the replica at the log\'s newest transaction: caught up after one quiet time', async () => {
    const r = await run(true, '0/500');
    expect(r.judged).toBe(true);
    expect(r.ms).toBeGreaterThanOrEqual(QUIET);
    expect(r.ms).toBeLessThan(5 * QUIET);
    expect(r.asked.log).toBe(1);
  });

  it('an empty log (or only its marker, 0/0) holds nothing the replica lacks', async () => {
    expect((await run(true, '0/0')).ms).toBeLessThan(5 * QUIET);
    expect((await run(true, null)).ms).toBeLessThan(5 * QUIET);
  });

  it('the log holds a newer transaction than the replica (a batch still applying it): not judged until five quiet times', async () => {
    const r = await run(true, '0/900');
    expect(r.judged).toBe(true);
    expect(r.ms).toBeGreaterThanOrEqual(5 * QUIET);
    expect(r.asked.log).toBeGreaterThan(1); // asked again while waiting
  });

  it('capture not past the point: the log is not even read, five quiet times', async () => {
    const r = await run(false, '0/500');
    expect(r.ms).toBeGreaterThanOrEqual(5 * QUIET);
    expect(r.asked.captured).toBeGreaterThan(0);
    expect(r.asked.log).toBe(0);
  });

  it('no log to read: five quiet times', async () => {
    const r = await run(true, undefined);
    expect(r.ms).toBeGreaterThanOrEqual(5 * QUIET);
    expect(r.asked.captured).toBe(0);
  });

  it('a replica that moves is waited for; one at the point is judged at once', async () => {
    const other = new pg.Client({ connectionString: url });
    await other.connect();
    try {
      let lsn = 0x500;
      const mover = setInterval(() => void ProgressStore.set(other, 'r', 'main', { lsn: `0/${(lsn += 0x10).toString(16)}`, offset: 5, history: 'h1', stream: null }), 50);
      const r = await run(false, undefined, 1500).finally(() => clearInterval(mover));
      expect(r.judged).toBe(false); // moving for longer than maxMs, and never reaching the point
      await ProgressStore.set(other, 'r', 'main', { lsn: '2/0', offset: 9, history: 'h1', stream: null });
      const at = await run(false, undefined);
      expect(at.judged).toBe(true);
      expect(at.ms).toBeLessThan(QUIET);
    } finally {
      await ProgressStore.set(other, 'r', 'main', { lsn: '0/500', offset: 5, history: 'h1', stream: null });
      await other.end();
    }
  });
});
