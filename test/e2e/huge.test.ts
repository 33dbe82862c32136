import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { peakRssMb, startCli, Proc } from '../helpers/procs';
import { createWorld, fingerprint, startUp, upArgs, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';

/**
 * One source transaction of 2,000,000 rows (PGFERRY_HUGE_ROWS to change it):
 * it reaches the replica atomically — a reader polling the replica all along
 * sees either none of it or all of it — while capture and apply, run as two
 * processes, keep their memory bounded. Peak RSS of each is printed.
 */
const ROWS = Number(process.env.PGFERRY_HUGE_ROWS ?? 2_000_000);
const SCHEMA = `
  CREATE TABLE big (id bigint PRIMARY KEY, customer_id int, amount numeric(12,2), status text, payload jsonb, created_at timestamptz);
  CREATE TABLE marker (id int PRIMARY KEY, rows bigint);
`;
// Far above what a bounded process needs (≈ 250–300 MB), far below what holding the transaction would take.
const RSS_LIMIT_MB = 600;


describe(`a ${ROWS.toLocaleString('en')}-row transaction`, () => {
  let w: World;
  let capture: Proc;
  let apply: Proc;

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a'], schema: SCHEMA });
    capture = startCli(['worker', '--queues', 'capture', '--source', w.sourceUrl], w.env);
    await waitFor('the capture worker to run', async () => {
      if (capture.child.exitCode !== null) throw new Error(`capture worker exited:\n${capture.output()}`);
      return capture.output().includes('pgferry worker running');
    }, 60_000);
    apply = await startUp(w, upArgs(w, ['--queues', 'apply']));
  });

  afterAll(async () => {
    await apply?.stop();
    await capture?.stop();
    await w?.teardown();
  });

  it('reaches the replica all at once, with capture and apply memory bounded', async () => {
    const reader = new pg.Client({ connectionString: w.replicaUrls.a });
    await reader.connect();
    const seen = new Map<string, number>();
    let stop = false;
    // One statement, one snapshot: both counts come from the same instant of the replica.
    const poll = (async () => {
      while (!stop) {
        const { rows } = await reader.query(`SELECT (SELECT count(*) FROM big)::text AS big, (SELECT count(*) FROM marker)::text AS marker`);
        const key = `${rows[0].big}/${rows[0].marker}`;
        seen.set(key, (seen.get(key) ?? 0) + 1);
        if (key === `${ROWS}/1`) return;
        await new Promise((r) => setTimeout(r, 1000)); // count(*) over millions of uncommitted rows is not free
      }
    })();

    const t0 = Date.now();
    await w.source.withClient('app', async (c) => {
      await c.query('BEGIN');
      await c.query(
        `INSERT INTO big
         SELECT g, g % 1000, (g % 100000) / 100.0, (ARRAY['new','paid','shipped','void'])[1 + g % 4],
                jsonb_build_object('n', g, 's', md5(g::text)), '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 second'
         FROM generate_series(1, $1::int) g`,
        [ROWS],
      );
      await c.query('INSERT INTO marker VALUES (1, $1)', [ROWS]);
      await c.query('COMMIT');
    });
    const committed = Date.now();

    try {
      await waitFor(`the replica to hold all ${ROWS} rows`, async () => seen.has(`${ROWS}/1`), 20 * 60_000, 500);
    } finally {
      stop = true;
      await poll.catch(() => undefined);
      await reader.end();
    }
    const seconds = (Date.now() - committed) / 1000;
    const rss = { capture: peakRssMb(capture.child.pid!), apply: peakRssMb(apply.child.pid!) };
    const observed = [...seen.entries()].map(([k, n]) => `${k} ×${n}`).join(', ');
    console.log(
      `huge transaction: ${ROWS} rows, source insert ${((committed - t0) / 1000).toFixed(1)} s, commit→replica ${seconds.toFixed(1)} s ` +
        `(${Math.round(ROWS / seconds)} rows/s); peak RSS capture ${rss.capture.toFixed(0)} MB, apply ${rss.apply.toFixed(0)} MB; ` +
        `reader saw (rows/marker): ${observed}`,
    );

    // Atomic: the reader only ever saw nothing or everything, and it did look while the transaction was in flight.
    expect([...seen.keys()].sort()).toEqual(['0/0', `${ROWS}/1`].sort());
    expect(seen.get('0/0')).toBeGreaterThan(1);
    // Exact: the same rows, byte for byte as text.
    expect(await fingerprint(w.replicas, 'replica_a', 'big')).toEqual(await fingerprint(w.source, 'app', 'big'));
    // Bounded: neither process held the transaction in memory.
    expect(rss.capture).toBeLessThan(RSS_LIMIT_MB);
    expect(rss.apply).toBeLessThan(RSS_LIMIT_MB);
  }, 30 * 60_000);
});
