/**
 * verify's catch-up (src/verify/verify.ts) against a real replica database:
 * a replica whose position stands still while a batch is in flight (its
 * checkpoint row locked, as apply's batch holds it until COMMIT) is not
 * idle — judging then read the batch's rows as missing (CI, session 14:
 * "public.audit: 641 missing" on a busy trigger-mode source). Once the batch
 * commits and the position stands still for the quiet time, it is; five
 * quiet times when capture has not put the point's transactions in the
 * stream.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/migrations';
import { ProgressStore } from '../../src/apply/progress-store';
import { catchUp } from '../../src/verify/verify';
import { PgCluster } from '../helpers/pg-cluster';

/** A point the replica never reaches: only standing still can end the wait. */
const POINT = { lsn: '1/0', snap: '1000:1000:' };

describe('verify catch-up', () => {
  let cluster: PgCluster;
  let url: string;
  const clients: pg.Client[] = [];
  const connect = async () => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    cluster = await PgCluster.start({ wal_level: 'replica' });
    url = await cluster.createDatabase('replica');
    const c = await connect();
    await migrate(c, 'target');
    await ProgressStore.create(c, 'r', 'main', 'h1', null);
  });
  afterAll(async () => {
    for (const c of clients) await c.end().catch(() => undefined);
    cluster?.destroy();
  });

  it('waits while a batch holds the checkpoint, and judges once it has committed and the position stands still', async () => {
    const [verifier, batch] = [await connect(), await connect()];
    const o = { source: verifier, replica: verifier, replicaName: 'r', capturedThrough: async () => true };
    expect(await ProgressStore.writerInFlight(verifier)).toBe(false);

    await batch.query('BEGIN');
    await ProgressStore.lock(batch, 'r', 'main');
    expect(await ProgressStore.writerInFlight(verifier)).toBe(true);
    // The point is never reached and the position never moves: only the batch in flight keeps it waiting.
    const t0 = Date.now();
    expect(await catchUp(o, POINT, 200, 1500)).toBe(false);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1500);

    let done = false;
    const judged = catchUp(o, POINT, 200, 10_000).finally(() => (done = true));
    await new Promise((res) => setTimeout(res, 800)); // four quiet times, all with the batch in flight
    expect(done).toBe(false);
    await batch.query('COMMIT');
    expect(await judged).toBe(true); // idle now: the position stood still with no batch in flight
    expect(await ProgressStore.writerInFlight(verifier)).toBe(false);
  });

  it('without capture past the point, waits five quiet times before judging (capture stopped, or not there yet)', async () => {
    const verifier = await connect();
    let asked = 0;
    const o = { source: verifier, replica: verifier, replicaName: 'r', capturedThrough: async () => (asked++, false) };
    let done = false;
    const judged = catchUp(o, POINT, 200, 10_000).finally(() => (done = true));
    await new Promise((res) => setTimeout(res, 600));
    expect(done).toBe(false);
    expect(asked).toBeGreaterThan(0);
    expect(await judged).toBe(true);
  });

  it('returns at once when the replica has reached the point, batch or not', async () => {
    const [verifier, batch] = [await connect(), await connect()];
    await ProgressStore.set(batch, 'r', 'main', { lsn: '2/0', offset: 5, history: 'h1', stream: null });
    await batch.query('BEGIN');
    await ProgressStore.lock(batch, 'r', 'main');
    const t0 = Date.now();
    expect(await catchUp({ source: verifier, replica: verifier, replicaName: 'r', capturedThrough: async () => false }, POINT, 5000, 10_000)).toBe(true);
    expect(Date.now() - t0).toBeLessThan(2000);
    await batch.query('ROLLBACK');
  });
});
