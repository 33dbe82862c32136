import * as fs from 'node:fs';
import * as path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import { runCli, startCli } from '../helpers/procs';
import { cli, contentOf, createWorld, startUp, waitForEqual, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';

/**
 * A table joins a running pipeline, in both capture modes: pgferry streams
 * `busy` to replicas a and b under a steady workload, while the application
 * also writes `late`, which is not captured. The operator adds `late` to the
 * source's tables in the config and runs `pgferry table add late`: it is
 * captured, copied from a snapshot into each replica while `busy` keeps
 * streaming (its lag sampled throughout), and the changes made to it during
 * the copy (inserts, updates, deletes, which keep coming) are applied after
 * the snapshot, none twice, none missing. \`late_log\`, keyless and
 * insert-only, joins with it and gets one row per transaction of that
 * writer: a change applied twice would be a second row there, not an
 * overwrite. Then `pgferry table remove late
 * --only b`: b keeps its rows and applies nothing more of it, a goes on.
 */
const SCHEMA = `
  CREATE TABLE busy (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(), n int);
  CREATE TABLE late (id int PRIMARY KEY, v int NOT NULL, pad text);
  CREATE TABLE late_log (n int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
`;
const LATE_ROWS = 200_000;

describe.each(['wal', 'trigger'])('a table joining a running pipeline (%s capture)', (mode) => {
  let w: World;
  let up: Proc;
  let configFile: string;
  let writing = true;
  const writers: Promise<void>[] = [];
  const config = (tables: string[]) => `sources:
  - name: ${w.sourceName}
    url: ${w.sourceUrl}
    mode: ${mode}
    tables: [${tables.join(', ')}]
replicas:
  - name: a
    url: ${w.replicaUrls.a}
  - name: b
    url: ${w.replicaUrls.b}
`;

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a', 'b'], schema: SCHEMA });
    await w.source.withClient('app', (c) => c.query(`INSERT INTO late SELECT g, g, repeat('x', 100) FROM generate_series(1, ${LATE_ROWS}) g; INSERT INTO late_log (n) SELECT -g FROM generate_series(1, 1000) g`));
    configFile = path.join(w.dataDir, 'pgferry.yaml');
    fs.writeFileSync(configFile, config(['busy']));
    up = await startUp(w, ['up', '--config', configFile]);
    // The other table's workload, and the application writing the table that is not captured yet.
    writers.push(
      w.source.withClient('app', async (c) => {
        for (let i = 0; writing; i++) {
          await c.query('INSERT INTO busy (n) VALUES ($1)', [i]);
          await new Promise((r) => setTimeout(r, 10));
        }
      }),
      w.source.withClient('app', async (c) => {
        for (let i = 0; writing; i++) {
          await c.query('BEGIN');
          await c.query('INSERT INTO late VALUES ($1, 0, $2)', [LATE_ROWS + i + 1, `new ${i}`]);
          await c.query('UPDATE late SET v = v + 1 WHERE id = $1', [1 + ((i * 7919) % LATE_ROWS)]);
          if (i % 3 === 0) await c.query('DELETE FROM late WHERE id = $1', [1 + ((i * 104729) % LATE_ROWS)]);
          await c.query('INSERT INTO late_log (n) VALUES ($1)', [i]);
          await c.query('COMMIT');
          await new Promise((r) => setTimeout(r, 5));
        }
      }),
    );
  });

  afterAll(async () => {
    writing = false;
    await Promise.all(writers.map((p) => p.catch(() => undefined)));
    await up?.stop();
    await w?.teardown();
  });

  /** How far replica a's copy of busy is behind now, in seconds (busy's rows are stamped with the time they were written). */
  const busyLag = () =>
    w.replicas.withClient('replica_a', async (c) => Number((await c.query(`SELECT extract(epoch FROM clock_timestamp() - max(at)) AS s FROM busy`)).rows[0].s));

  it('arrives complete, with no gap and no double, while the other table streams on; remove stops it on one replica only', async () => {
    await waitFor('replica a to stream busy', async () => (await busyLag()) < 2, 120_000);
    const baseline: number[] = [];
    const until = Date.now() + 5000;
    while (Date.now() < until) {
      baseline.push(await busyLag());
      await new Promise((r) => setTimeout(r, 250));
    }

    // Not captured yet: the replicas do not have it, and a table add for it is refused until the config says so.
    const refused = await cli(w, ['table', 'add', 'late', '--config', configFile]);
    expect(refused.code, refused.stdout + refused.stderr).not.toBe(0);
    expect(refused.stderr + refused.stdout).toMatch(/table public\.late is not in the source's tables .*add it there first/);

    fs.writeFileSync(configFile, config(['busy', 'late', 'late_log']));
    let done = false;
    const adding = runCli(['table', 'add', 'late', 'late_log', '--config', configFile], w.env, 600_000).finally(() => (done = true));
    const during: number[] = [];
    while (!done) {
      during.push(await busyLag());
      await new Promise((r) => setTimeout(r, 250));
    }
    const add = await adding;
    expect(add.code, add.stdout + add.stderr).toBe(0);
    const joined = [...add.stdout.matchAll(/replica '(\w+)': public\.late, public\.late_log joined with (\d+) rows as of source position \S+, (\d+) change\(s\) made during the copy applied/g)];
    expect(joined.map((m) => m[1]).sort()).toEqual(['a', 'b']);
    for (const m of joined) expect(Number(m[2])).toBeGreaterThan(LATE_ROWS / 2);
    // The copy took long enough for changes to arrive during it: the kept-and-replayed path ran.
    expect(joined.some((m) => Number(m[3]) > 0), add.stdout).toBe(true);
    const max = (xs: number[]) => Math.max(...xs);
    console.log(`[${mode}] busy lag on replica a: before the join max ${max(baseline).toFixed(2)} s over ${baseline.length} samples; during it max ${max(during).toFixed(2)} s over ${during.length} samples; ${joined.map((m) => `${m[1]}: ${m[2]} rows copied, ${m[3]} kept and replayed`).join('; ')}`);
    expect(during.length).toBeGreaterThan(2);
    expect(max(during)).toBeLessThan(5);

    // The writers go on for a while after the join, then stop: both replicas equal the source, table by table.
    await new Promise((r) => setTimeout(r, 2000));
    writing = false;
    await Promise.all(writers);
    await waitForEqual(w, 'a', ['busy', 'late', 'late_log'], 180_000);
    await waitForEqual(w, 'b', ['busy', 'late', 'late_log'], 180_000);
    const logged = async (cluster: typeof w.source, db: string) =>
      cluster.withClient(db, async (c) => (await c.query('SELECT count(*)::int AS rows, count(DISTINCT n)::int AS distinct FROM late_log')).rows[0]);
    const sourceLog = await logged(w.source, 'app');
    expect(sourceLog.rows).toBeGreaterThan(1000);
    for (const db of ['replica_a', 'replica_b']) expect(await logged(w.replicas, db), db).toEqual(sourceLog);

    const list = await cli(w, ['table', 'list', '--config', configFile, '--json']);
    expect(list.code, list.stdout + list.stderr).toBe(0);
    for (const r of JSON.parse(list.stdout)) {
      expect(r.tables.map((t: { table: string; state: string }) => `${t.table}=${t.state}`).sort()).toEqual(['public.busy=ready', 'public.late=ready', 'public.late_log=ready']);
    }
    // Joined already: a second add is refused unless it is to replace the copy.
    const again = await cli(w, ['table', 'add', 'late', '--config', configFile]);
    expect(again.code).not.toBe(0);
    expect(again.stderr + again.stdout).toMatch(/already takes table public\.late; to copy it again from a fresh snapshot pass --replace/);

    // Removed from b only: b keeps what it had, a follows the source.
    const removed = await cli(w, ['table', 'remove', 'late', '--only', 'b', '--config', configFile]);
    expect(removed.code, removed.stdout + removed.stderr).toBe(0);
    const kept = (await contentOf(w.replicas, 'replica_b', ['late'])).late;
    await w.source.withClient('app', (c) => c.query(`UPDATE late SET v = -1 WHERE id <= 10; INSERT INTO busy (n) VALUES (-1)`));
    await waitForEqual(w, 'a', ['busy', 'late']);
    await waitFor('replica b to apply busy past the removal', async () => (await contentOf(w.replicas, 'replica_b', ['busy'])).busy.length === (await contentOf(w.source, 'app', ['busy'])).busy.length);
    expect((await contentOf(w.replicas, 'replica_b', ['late'])).late).toEqual(kept);
    const status = JSON.parse((await cli(w, ['replica', 'status', 'b', '--json'])).stdout);
    expect(status.state).not.toBe('failed');
  });
});

/**
 * Issue 26.8: the joining table's shape changes while it is copied. Tables
 * `joiner` and `bulk` join together, one copy at a time; while the copy of
 * bulk waits for a lock the test holds on the source, joiner — copied just
 * before — gets a column, rows that use it, a new name and more rows. Those changes come after the snapshot: kept, then
 * applied in order at the swap through the path streaming schema changes
 * take, the RENAME followed by the registry (rows written under the new
 * name are kept, not dropped as unknown). Then a join killed during its
 * copy after a kept ALTER runs again: the ALTER is at or before the new
 * snapshot, the replica's table takes the shape, and the re-run succeeds.
 * The source captures all tables; replica a's tables decide what it takes.
 */
describe('a joining table whose shape changes during the copy (wal capture)', () => {
  const SHAPED = `
    CREATE TABLE busy (id bigserial PRIMARY KEY, n int);
    CREATE TABLE joiner (id int PRIMARY KEY, v int NOT NULL);
    CREATE TABLE third (id int PRIMARY KEY, v int NOT NULL);
    CREATE TABLE bulk (id int PRIMARY KEY, pad text);
  `;
  let w: World;
  let up: Proc;
  let configFile: string;
  const config = (tables: string[]) => `sources:
  - name: ${w.sourceName}
    url: ${w.sourceUrl}
replicas:
  - name: a
    url: ${w.replicaUrls.a}
    tables: [${tables.join(', ')}]
`;
  const sql = (q: string) => w.source.withClient('app', (c) => c.query(q));
  const onReplica = <T>(q: string) => w.replicas.withClient('replica_a', async (c) => (await c.query(q)).rows as T[]);
  /** A copy of the join (`COPY (SELECT … FROM ONLY public.<table>) TO STDOUT`) on the source, and whether it waits for a lock. */
  const copyOf = (table: string) =>
    w.source.withClient('app', async (c) => {
      const { rows } = await c.query(`SELECT wait_event_type AS w FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()`, [`COPY (SELECT%"${table}"%`]);
      return rows.length ? { waiting: rows[0].w === 'Lock' } : null;
    });
  const kept = async () => (await onReplica<{ n: number }>(`SELECT count(*)::int AS n FROM pgferry.table_pending`))[0].n;
  /** For waitFor: the replica keeps `n` chunks (the last count is in the timeout's message). */
  const keeps = (n: number) => async () => {
    const now = await kept();
    if (now < n) throw new Error(`${now} of ${n} kept`);
    return true;
  };
  /**
   * From the moment the join copies `first` (one table at a time, before
   * bulk), hold bulk on the source: the copy of bulk then waits until
   * `release`, so what the test changes meanwhile is kept by the replica
   * before the swap — every time, whatever the machine's speed.
   */
  async function holdBulkAfter(first: string): Promise<{ release: () => Promise<void> }> {
    await waitFor(`the copy of ${first} to be under way`, () => copyOf(first), 120_000, 20);
    const c = new pg.Client({ connectionString: w.sourceUrl });
    await c.connect();
    await c.query(`BEGIN; SET LOCAL lock_timeout = '5s'; LOCK TABLE bulk IN ACCESS EXCLUSIVE MODE`);
    return {
      release: async () => {
        await c.query('COMMIT');
        await c.end();
      },
    };
  }

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a'], schema: SHAPED });
    await sql(`INSERT INTO joiner SELECT g, g FROM generate_series(1, 200000) g;
               INSERT INTO third SELECT g, g FROM generate_series(1, 200000) g;
               INSERT INTO bulk SELECT g, repeat('x', 20) FROM generate_series(1, 1000) g;`);
    configFile = path.join(w.dataDir, 'pgferry.yaml');
    fs.writeFileSync(configFile, config(['busy']));
    up = await startUp(w, ['up', '--config', configFile]);
    await sql(`INSERT INTO busy (n) VALUES (1)`);
    await waitForEqual(w, 'a', ['busy']);
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  it('applies an ALTER and a RENAME made after the snapshot at the swap, and keeps the rows of the renamed table', async () => {
    fs.writeFileSync(configFile, config(['busy', 'joiner', 'bulk', 'joined', 'third']));
    const adding = runCli(['table', 'add', 'joiner', 'bulk', '--parallel', '1', '--config', configFile], w.env, 600_000);
    const held = await holdBulkAfter('joiner');
    try {
      // The ALTER waits for the copy of joiner to finish: it commits after the snapshot.
      await sql(`ALTER TABLE joiner ADD COLUMN extra text NOT NULL DEFAULT 'x'`);
      await sql(`UPDATE joiner SET extra = 'y', v = v + 1 WHERE id <= 10`);
      await sql(`ALTER TABLE joiner RENAME TO joined`);
      await sql(`INSERT INTO joined (id, v, extra) VALUES (200001, 1, 'z')`);
      await sql(`DELETE FROM joined WHERE id = 20`);
      // All five kept (before the fix the last two, under the new name, were dropped as unknown).
      await waitFor('the changes to be kept on the replica', keeps(5), 60_000);
      expect(await copyOf('bulk')).toEqual({ waiting: true }); // the swap is still to come
    } finally {
      await held.release();
    }
    const add = await adding;
    expect(add.code, add.stdout + add.stderr).toBe(0);
    const joined = add.stdout.match(/replica 'a': (.*) joined with (\d+) rows as of source position \S+, (\d+) change\(s\) made during the copy applied/);
    expect(joined, add.stdout).not.toBeNull();
    expect(joined![1]).toBe('public.joined, public.bulk');
    expect(Number(joined![3])).toBe(5);
    // Later changes of the renamed table stream as any other.
    await sql(`UPDATE joined SET extra = 'later' WHERE id = 1; INSERT INTO busy (n) VALUES (3)`);
    await waitForEqual(w, 'a', ['busy', 'joined', 'bulk'], 180_000);
    expect(await onReplica(`SELECT to_regclass('public.joiner')::text AS t`)).toEqual([{ t: null }]);
    const list = await cli(w, ['table', 'list', '--config', configFile, '--json']);
    expect(list.code, list.stdout + list.stderr).toBe(0);
    expect(JSON.parse(list.stdout)[0].tables.map((t: { table: string; state: string }) => `${t.table}=${t.state}`).sort()).toEqual(['public.bulk=ready', 'public.busy=ready', 'public.joined=ready']);
    expect(await kept()).toBe(0);
  });

  it('a join killed during its copy after an ALTER of its table was kept succeeds when run again', async () => {
    fs.writeFileSync(configFile, config(['busy', 'joiner', 'bulk', 'joined', 'third']));
    const args = ['table', 'add', 'third', 'bulk', '--replace', '--parallel', '1', '--config', configFile];
    const first = startCli(args, w.env);
    const held = await holdBulkAfter('third');
    try {
      await sql(`ALTER TABLE third ADD COLUMN note text DEFAULT 'n'`);
      await sql(`UPDATE third SET note = 'm', v = -v WHERE id <= 5`);
      await waitFor('the changes to be kept on the replica', keeps(2), 60_000);
      await first.kill9(); // before its swap: the copy of bulk waits for the test
    } finally {
      await held.release();
    }
    expect(await kept()).toBe(2);
    const again = await runCli(args, w.env, 600_000);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    await sql(`UPDATE third SET note = 'later' WHERE id = 6; INSERT INTO busy (n) VALUES (4)`);
    await waitForEqual(w, 'a', ['busy', 'third', 'bulk'], 180_000);
    expect(await kept()).toBe(0);
  });
});
