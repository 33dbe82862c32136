import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import { cli, contentOf, createWorld, deleteStream, startUp, waitForEqual, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';

/**
 * Partition maintenance and DROP TABLE reach replicas (issue 26, items 1 and
 * 2), in both capture modes, with the source taking every table:
 *
 * - a range-partitioned `m` (monthly partitions): TRUNCATE of a partition
 *   (retention by partition), DETACH + DROP of a partition, a DROP of an
 *   attached partition, a new partition created and written, and a table
 *   filled on its own and then attached. Replica a mirrors the partitioning;
 *   replica b holds `m` as a plain table. After each step both hold exactly
 *   the source's rows of `m`, and a has the source's partitions.
 * - the ETL pattern DROP TABLE staging; CREATE TABLE staging; INSERT 50 rows,
 *   three rounds: the replicas hold the last round's 50 rows, not 150.
 */
const SCHEMA = `
  CREATE TABLE m (id int NOT NULL, ts timestamptz NOT NULL, v text, PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts);
  CREATE TABLE m_2026_01 PARTITION OF m FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2026-02-01 00:00:00+00');
  CREATE TABLE m_2026_02 PARTITION OF m FOR VALUES FROM ('2026-02-01 00:00:00+00') TO ('2026-03-01 00:00:00+00');
  CREATE TABLE m_2026_03 PARTITION OF m FOR VALUES FROM ('2026-03-01 00:00:00+00') TO ('2026-04-01 00:00:00+00');
  CREATE TABLE staging (id int, v text);
`;
/** b does not mirror the partitioning: its m is one plain table. */
const PLAIN_M = `DROP TABLE m; CREATE TABLE m (id int NOT NULL, ts timestamptz NOT NULL, v text, PRIMARY KEY (id, ts))`;

const rowsFor = (month: number, from: number, n: number) =>
  `INSERT INTO m SELECT g, timestamptz '2026-${String(month).padStart(2, '0')}-01 00:00:00+00' + (g % 27) * interval '1 day', 'v' || g FROM generate_series(${from}, ${from + n - 1}) g`;

const partitionsOf = (db: string, w: World, onSource = false) =>
  (onSource ? w.source : w.replicas).withClient(db, async (c) =>
    (await c.query(`SELECT c.relname::text AS name FROM pg_partition_tree('m') t JOIN pg_class c ON c.oid = t.relid WHERE t.level > 0 ORDER BY 1`)).rows.map((r) => r.name as string),
  );

describe.each(['wal', 'trigger'])('partition maintenance and DROP TABLE (%s capture)', (mode) => {
  let w: World;
  let up: Proc;
  let configFile: string;

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a', 'b'], schema: SCHEMA });
    await w.replicas.withClient('replica_b', (c) => c.query(PLAIN_M));
    configFile = path.join(w.dataDir, 'pgferry.yaml');
    fs.writeFileSync(
      configFile,
      `sources:
  - name: ${w.sourceName}
    url: ${w.sourceUrl}
    mode: ${mode}
replicas:
  - name: a
    url: ${w.replicaUrls.a}
  - name: b
    url: ${w.replicaUrls.b}
`,
    );
    up = await startUp(w, ['up', '--config', configFile]);
    await w.source.withClient('app', async (c) => {
      await c.query(rowsFor(1, 1, 1000));
      await c.query(rowsFor(2, 1001, 1000));
      await c.query(rowsFor(3, 2001, 1000));
    });
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  const bothEqual = async (tables: string[]) => {
    await waitForEqual(w, 'a', tables);
    await waitForEqual(w, 'b', tables);
  };

  it('carries TRUNCATE, DETACH, DROP, CREATE and ATTACH of partitions to a mirroring and a plain replica', async () => {
    await bothEqual(['m']);
    const src = (sql: string) => w.source.withClient('app', (c) => c.query(sql));

    // Retention by partition, from a session whose DateStyle prints 2026-02-01 as 01/02/2026 (the bound is sent as ISO whatever it says).
    await src(`SET datestyle = 'SQL, DMY'; TRUNCATE m_2026_01`);
    await src(rowsFor(2, 5001, 10));
    await bothEqual(['m']);

    // Detach, then drop the detached table.
    await src('ALTER TABLE m DETACH PARTITION m_2026_02');
    await src(`UPDATE m_2026_02 SET v = 'after detach' WHERE id % 100 = 0`);
    // A table of its own now: both replicas (they take every table) hold it, with its rows, and m without them.
    await bothEqual(['m', 'm_2026_02']);
    await src('DROP TABLE m_2026_02');
    await bothEqual(['m']);

    // A new partition, and a row for it.
    await src(`CREATE TABLE m_2026_04 PARTITION OF m FOR VALUES FROM ('2026-04-01 00:00:00+00') TO ('2026-05-01 00:00:00+00')`);
    await src(rowsFor(4, 6001, 100));
    await bothEqual(['m']);

    // A partition dropped while attached: its rows leave m.
    await src('DROP TABLE m_2026_03');
    await bothEqual(['m']);

    // Filled on its own (captured as a table of its own), then attached with its rows.
    await src(`CREATE TABLE m_2026_05 (LIKE m INCLUDING ALL)`);
    await src(`INSERT INTO m_2026_05 SELECT g, timestamptz '2026-05-02 00:00:00+00', 'may' || g FROM generate_series(1, 40) g`);
    await src(`ALTER TABLE m ATTACH PARTITION m_2026_05 FOR VALUES FROM ('2026-05-01 00:00:00+00') TO ('2026-06-01 00:00:00+00')`);
    await src(`UPDATE m SET v = v || '!' WHERE ts >= '2026-05-01'`);
    await bothEqual(['m']);

    expect(await partitionsOf('replica_a', w)).toEqual(await partitionsOf('app', w, true));
    // The detached partition was a table of its own (captured: the source takes every table) until its DROP: gone on a too.
    for (const db of ['replica_a', 'replica_b']) {
      const left = await w.replicas.withClient(db, async (c) => (await c.query(`SELECT to_regclass('m_2026_02') IS NULL AS gone`)).rows[0].gone);
      expect(left, db).toBe(true);
    }
    expect(await partitionsOf('app', w, true)).toEqual(['m_2026_01', 'm_2026_04', 'm_2026_05']);
    const counts = await contentOf(w.replicas, 'replica_b', ['m']);
    console.log(`[${mode}] m: ${counts.m.length} rows on the source and both replicas; a's partitions: ${(await partitionsOf('replica_a', w)).join(', ')}`);
    expect(counts.m.length).toBe(100 + 40); // January truncated, February (with its 10 later rows) detached, March dropped
  });

  it('replica resync after a lost stream brings a mirroring replica to the source partitions it missed', async () => {
    const src = (sql: string) => w.source.withClient('app', (c) => c.query(sql));
    // a misses a new partition (with rows) and a dropped one: the stream that carried them is deleted.
    expect((await cli(w, ['replica', 'pause', 'a'])).code).toBe(0);
    await waitFor('a to be paused', async () => JSON.parse((await cli(w, ['replica', 'status', 'a', '--json'])).stdout).state === 'paused');
    await src(`CREATE TABLE m_2026_07 PARTITION OF m FOR VALUES FROM ('2026-07-01 00:00:00+00') TO ('2026-08-01 00:00:00+00')`);
    await src(rowsFor(7, 7001, 30));
    await src('DROP TABLE m_2026_04');
    await waitForEqual(w, 'b', ['m']);
    await deleteStream(w.sourceName);
    expect((await cli(w, ['replica', 'resume', 'a'])).code).toBe(0);
    await src(rowsFor(7, 7101, 5));
    for (const r of ['a', 'b']) {
      await waitFor(`${r} to need a resync`, async () => JSON.parse((await cli(w, ['replica', 'status', r, '--json'])).stdout).state === 'needs_resync', 120_000);
      const res = await cli(w, ['replica', 'resync', r, '--config', configFile]); // the config says the capture mode
      expect(res.code, res.stdout + res.stderr).toBe(0);
      if (r === 'a') expect(res.stdout).toMatch(/partition public\.m_2026_04 dropped, partition public\.m_2026_07 created/);
    }
    await src(rowsFor(7, 7201, 5));
    await bothEqual(['m']);
    expect(await partitionsOf('replica_a', w)).toEqual(await partitionsOf('app', w, true));
  });

  it('drops and re-creates a table of the same name without merging its histories', async () => {
    for (let round = 1; round <= 3; round++) {
      await w.source.withClient('app', async (c) => {
        await c.query('DROP TABLE staging');
        await c.query('CREATE TABLE staging (id int, v text)');
        await c.query(`INSERT INTO staging SELECT g, 'round ${round}' FROM generate_series(1, 50) g`);
      });
    }
    await bothEqual(['staging']);
    const b = await contentOf(w.replicas, 'replica_b', ['staging']);
    expect(b.staging).toHaveLength(50);
    expect(b.staging.every((r) => r.endsWith(',"round 3")'))).toBe(true);
  });

  // Outside partitions, but it needs a trigger-captured source with wal_level=logical, which this file has:
  // a command given without --mode on such a source used to take WAL mode, create a slot and publish a gap marker.
  it.runIf(mode === 'trigger')('refuses WAL-mode commands on a trigger-captured source, naming --mode trigger, and changes nothing', async () => {
    await bothEqual(['m']);
    const flags = ['--source', w.sourceUrl]; // no --mode, no config file: WAL, the default
    const want = new RegExp(`source '${w.sourceName}' is captured in trigger mode \\(its position in pgferry\\.capture_state, and capture triggers\\), but this command was given wal mode \\(the default\\); nothing was changed\\. Pass --mode trigger`);
    for (const args of [
      ['replica', 'resync', 'a', ...flags, '--replica', `a=${w.replicaUrls.a}`],
      ['init', ...flags],
      ['verify', 'a', ...flags, '--replica', `a=${w.replicaUrls.a}`],
    ]) {
      const r = await cli(w, args);
      expect(r.code, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(want);
    }
    const slots = await w.source.withClient('app', (c) => c.query(`SELECT slot_name FROM pg_replication_slots UNION ALL SELECT pubname FROM pg_publication`));
    expect(slots.rows).toEqual([]);
    // Nothing reached the stream: both replicas still running and following.
    await w.source.withClient('app', (c) => c.query(rowsFor(1, 9001, 10)));
    await bothEqual(['m']);
    for (const r of ['a', 'b']) expect(JSON.parse((await cli(w, ['replica', 'status', r, '--json'])).stdout).state).toBe('running');
  });
});
