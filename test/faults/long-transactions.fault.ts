import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { compareLsn } from '../../src/lsn';
import { progressLsn, readStream } from './harness/inspect';
import { FaultWorld, REPLICAS } from './harness/system';
import { startLoad, stopLoads } from './harness/workload';
import { waitFor } from '../helpers/wait';

/**
 * Fault 9 (the case that cost Debezium data): long transactions interleaved
 * with short ones across a kill -9 of the capture worker. Several long
 * transactions write their first rows while the short workload commits
 * around them; the replicas apply short transactions committed after those
 * first rows (so their checkpoint passes the LSNs of the long transactions'
 * early changes); capture is killed with the long transactions still open,
 * more rows go into them, capture comes back, and they commit one by one
 * with short transactions committing in between. One of them is big enough
 * to travel in several chunks.
 *
 * A dedupe by event LSN ("skip changes at or below the checkpoint") would drop
 * the early rows of every long transaction; pgferry dedupes by commit
 * position, so every long transaction must arrive whole, exactly once.
 */
const LONGS = [
  { rows: [300, 2500, 3500] }, // > chunk_changes (2000): several chunks in the stream
  { rows: [20, 20, 20] },
  { rows: [1, 0, 5] },
  { rows: [200, 1, 100] },
];

describe('fault 9: long transactions interleaved with short ones across a capture restart', () => {
  let f: FaultWorld;
  const clients: pg.Client[] = [];

  beforeAll(async () => {
    f = await FaultWorld.create();
    await f.start();
  });

  afterEach(stopLoads);

  afterAll(async () => {
    for (const c of clients) await c.end().catch(() => undefined);
    await f?.teardown();
  });

  it('fault 9: every long transaction arrives whole, once; nothing lost or duplicated', async () => {
    const load = startLoad(f);
    await f.more(load, 100);

    const write = (c: pg.Client, i: number, rows: number) =>
      rows > 0
        ? c.query(
            `INSERT INTO events (counter_id, payload) SELECT 1 + g % 10, jsonb_build_object('long', $1::int, 'g', g) FROM generate_series(1, $2::int) g`,
            [i, rows],
          )
        : Promise.resolve();

    // 1. Open the long transactions one after another, short ones committing between them.
    const firstLsns: string[] = [];
    for (const [i, l] of LONGS.entries()) {
      const c = new pg.Client({ connectionString: f.w.sourceUrl });
      await c.connect();
      clients.push(c);
      await c.query('BEGIN');
      await c.query('INSERT INTO audit VALUES (gen_random_uuid(), $1)', [-(i + 1)]);
      firstLsns.push((await c.query('SELECT pg_current_wal_insert_lsn()::text AS l')).rows[0].l);
      await write(c, i, l.rows[0]);
      await f.more(load, 30);
    }
    const newestFirst = firstLsns.reduce((a, b) => (compareLsn(a, b) >= 0 ? a : b));

    // 2. Both replicas checkpoint past the early changes of every long transaction (short ones committed after them).
    for (const r of REPLICAS) {
      await waitFor(`replica ${r} to apply past ${newestFirst}`, async () => {
        const lsn = await progressLsn(f.w, r);
        return lsn !== null && compareLsn(lsn, newestFirst) > 0;
      }, 120_000);
    }
    for (const [i, l] of LONGS.entries()) await write(clients[i], i, l.rows[1]);

    // 3. kill -9 of capture with every long transaction open; they go on writing while it is down.
    await f.capture!.kill9();
    const t0 = Date.now();
    await f.more(load, 100);
    for (const [i, l] of LONGS.entries()) await write(clients[i], i, l.rows[2]);
    await f.more(load, 100);

    // 4. Capture back; the long transactions commit one by one, short ones between them.
    await f.startCapture();
    await f.more(load, 100, 180_000);
    const commitLsns: string[] = [];
    for (const c of clients) {
      await c.query('COMMIT');
      commitLsns.push((await c.query('SELECT pg_current_wal_insert_lsn()::text AS l')).rows[0].l);
      await f.more(load, 100, 180_000);
    }

    const row = await f.settle(load, { n: 9, fault: 'long transactions interleaved with short ones across a capture kill -9', t0 });

    // Each long transaction is in the replicas whole (the content comparison of settle covers every row; say it per transaction too).
    const perLong = (db: string, cluster: typeof f.w.source) =>
      cluster.withClient(db, async (c) => (await c.query(`SELECT (payload->>'long')::int AS i, count(*)::int AS n FROM events WHERE payload ? 'long' GROUP BY 1 ORDER BY 1`)).rows);
    const expected = LONGS.map((l, i) => ({ i, n: l.rows.reduce((a, b) => a + b, 0) })).filter((x) => x.n > 0);
    expect(await perLong('app', f.w.source)).toEqual(expected);
    for (const r of REPLICAS) expect(await perLong(`replica_${r}`, f.w.replicas), `long transactions on replica ${r}`).toEqual(expected);

    const stream = await readStream(f.w);
    const big = stream.filter((e) => e.lsn === stream.find((x) => x.seq > 0)?.lsn);
    const chunks = `${new Set(big.map((e) => e.seq)).size} chunks (${big.length} messages)`;
    console.log(
      `fault 9: ${LONGS.length} long transactions, first changes at ${firstLsns.join(', ')} (replicas checkpointed past ${newestFirst} before the kill), ` +
        `committed after the restart near ${commitLsns.join(', ')}; the biggest in ${chunks}; ` +
        `${row.transactions} short transactions; lost ${row.lost}, duplicated ${row.duplicated}; converged ${row.convergedSeconds}s after the kill`,
    );
  });
});
