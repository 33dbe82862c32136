/**
 * verify's catch-up (src/verify/verify.ts) against a real replica database:
 * a replica whose position stands still while a batch is in flight (its
 * checkpoint row locked, as apply's batch holds it until COMMIT) is not
 * idle — judging then read the batch's rows as missing (CI, session 14:
 * "public.audit: 641 missing" on a busy trigger-mode source). Once the batch
 * commits and the position stands still for the quiet time, it is.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/migrations';
import { ProgressStore } from '../../src/apply/progress-store';
import { catchUp } from '../../src/verify/verify';
import { PgCluster } from '../helpers/pg-cluster';

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
    const o = { replica: verifier, replicaName: 'r' };
    expect(await ProgressStore.writerInFlight(verifier)).toBe(false);

    await batch.query('BEGIN');
    await ProgressStore.lock(batch, 'r', 'main');
    expect(await ProgressStore.writerInFlight(verifier)).toBe(true);
    // The point is never reached and the position never moves: only the batch in flight keeps it waiting.
    const t0 = Date.now();
    expect(await catchUp(o, '1/0', 200, 1500)).toBe(false);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1500);

    let done = false;
    const judged = catchUp(o, '1/0', 200, 10_000).finally(() => (done = true));
    await new Promise((res) => setTimeout(res, 800)); // four quiet times, all with the batch in flight
    expect(done).toBe(false);
    await batch.query('COMMIT');
    expect(await judged).toBe(true); // idle now: the position stood still with no batch in flight
    expect(await ProgressStore.writerInFlight(verifier)).toBe(false);
  });

  it('returns at once when the replica has reached the point, batch or not', async () => {
    const [verifier, batch] = [await connect(), await connect()];
    await ProgressStore.set(batch, 'r', 'main', { lsn: '2/0', offset: 5, history: 'h1', stream: null });
    await batch.query('BEGIN');
    await ProgressStore.lock(batch, 'r', 'main');
    const t0 = Date.now();
    expect(await catchUp({ replica: verifier, replicaName: 'r' }, '1/0', 5000, 10_000)).toBe(true);
    expect(Date.now() - t0).toBeLessThan(2000);
    await batch.query('ROLLBACK');
  });
});
