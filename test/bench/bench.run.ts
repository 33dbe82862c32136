import * as fs from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PgCluster } from '../helpers/pg-cluster';
import { startTemporal } from '../helpers/temporal';
import { cpuOf, cpuSeconds, machineCpu, peakRssMb, runCli, startCli, Proc, ROOT } from '../helpers/procs';
import { deleteStream, fingerprint, RABBIT_URL } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';
import { Client, Connection } from '@temporalio/client';
import { request } from '../../src/cli/pause-resume';
import { replicaWorkflowId } from '../../src/names';

/**
 * `npm run bench`: pgferry against PostgreSQL's native logical replication,
 * on the same machine, in the same run, on the same workloads — native
 * first, then pgferry (with the other one stopped, and each caught up
 * before its measurement starts). Every workload ends with the replicas
 * verified equal to the source by row-hash fingerprint.
 *
 *   W1  one transaction inserting N rows (default 1,000,000)
 *   W2  one transaction updating all those rows
 *   W4  W1 into three replicas at once (pgferry: three replicas of one capture;
 *       native: three subscriptions)
 *
 *   W3  pgbench's TPC-B-like script (4 clients, scale 10) on the source: its tps
 *       with nothing attached, with native alone, with pgferry alone, and with
 *       both replicating the same tables at the same time (the fair comparison:
 *       they share the machine the same way); lag sampled on each replica
 *       every 20 ms from a heartbeat row the source sets every 100 ms
 *       (p50/p99/max), and the drain after the load
 *   W5  hot rows: TPC-B-like at scale 1 (one branch, ten tellers: every
 *       transaction updates the same branch row) while both replicas are
 *       paused (native: subscription disabled); then each resumed alone, by a
 *       request on a connection already open (native: ALTER SUBSCRIPTION …
 *       ENABLE; pgferry: the update `pgferry replica resume` sends, without the
 *       CLI process's start): seconds from the request to caught up, and
 *       source transactions applied per second
 *   W6  catch-up: the same with W3's load for PGFERRY_BENCH_CATCHUP_SECONDS
 *       (default 300)

 * PGFERRY_BENCH_ROWS scales N down for a quick run, PGFERRY_BENCH_OLTP_SECONDS
 * the W3 duration (default 30), PGFERRY_BENCH_HOT_SECONDS W5's load (default 60);
 * PGFERRY_BENCH_ONLY=W3 (or W1, W4: a comma list) runs only those tests; PGFERRY_TEST_NODE_ARGS="--cpu-prof
 * --cpu-prof-dir=<dir>" profiles every pgferry process; PGFERRY_BENCH_KEEP keeps the clusters and stream. Results: a table on stdout,
 * test/bench/results/latest.{json,md}.
 */
const N = Number(process.env.PGFERRY_BENCH_ROWS ?? 1_000_000);
const TABLE = `(id bigserial PRIMARY KEY, customer_id int, amount numeric(12,2), status text, payload jsonb, created_at timestamptz)`;
const SCHEMA = `
  CREATE TABLE w_native ${TABLE};
  CREATE TABLE w_pgferry ${TABLE};
  CREATE TABLE marker (name text PRIMARY KEY, v bigint NOT NULL);
  INSERT INTO marker VALUES ('native', 0), ('pgferry', 0);
  CREATE TABLE hb (id int PRIMARY KEY, at timestamptz NOT NULL);
  INSERT INTO hb VALUES (1, clock_timestamp());
`;
/** pgbench's tables: W3 and W6 in public (scale 10), W5 in hot (scale 1), the no-replication baseline in base (in no publication). */
const PGBENCH_TABLES = ['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'pgbench_history'];
const OLTP_TABLES = [...PGBENCH_TABLES.map((t) => `public.${t}`), ...PGBENCH_TABLES.map((t) => `hot.${t}`)];
const CATCHUP_SECONDS = Number(process.env.PGFERRY_BENCH_CATCHUP_SECONDS ?? 300);
const HOT_SECONDS = Number(process.env.PGFERRY_BENCH_HOT_SECONDS ?? 60);
const OLTP_SECONDS = Number(process.env.PGFERRY_BENCH_OLTP_SECONDS ?? 30);
const PGBENCH = '/usr/lib/postgresql/15/bin/pgbench';
const REPLICAS = ['r1', 'r2', 'r3'];
const ONLY = process.env.PGFERRY_BENCH_ONLY?.split(',').map((w) => w.trim().toUpperCase());
/** The test of workload `w` (W1 runs W1 and W2; W3 runs W3, W6 and W5), unless PGFERRY_BENCH_ONLY leaves it out. */
const bench = (w: string) => (ONLY && !ONLY.includes(w) ? it.skip : it);

interface Row {
  workload: string;
  system: 'native' | 'pgferry';
  rows: number;
  seconds: number[];
  rowsPerSecond: number;
  captureRssMb?: number;
  applyRssMb?: number;
  /** From commit until the last replica had it: the whole machine's CPU use (% of all cores), and CPU seconds of capture and apply. */
  cpuBusyPct?: number;
  captureCpuS?: number;
  applyCpuS?: number;
  rabbitCpuS?: number;
  stages?: StageCpu;
}

/**
 * CPU seconds of PostgreSQL's processes that replicate (issue 27, item 4), read
 * from /proc for the backends pg_stat_activity names: the walsenders on the
 * source (native's by its subscription's application_name sub_*, pgferry's the
 * others), and on the replica cluster native's apply workers and the client
 * backends of pgferry's replica databases (not the benchmark's own lag probes,
 * which set application_name pgferry-bench). A backend that exits inside the
 * window takes its CPU with it (pgferry's pooled connections and the
 * walsenders live through a workload).
 */
interface StageCpu {
  walsenderPgferry: number;
  walsenderNative: number;
  replicaPgferry: number;
  applyWorkerNative: number;
}

interface Lag {
  p50: number;
  p99: number;
  max: number;
  drainSeconds: number;
}

/** W3: one pgbench run with some replicators attached. */
interface OltpRun {
  attached: ('native' | 'pgferry')[];
  tps: number;
  lag: Partial<Record<'native' | 'pgferry', Lag>>;
  cpuBusyPct: number;
  captureCpuS?: number;
  applyCpuS?: number;
  /** RabbitMQ's CPU seconds during the load (it serves pgferry's log only). */
  rabbitCpuS?: number;
  captureRssMb?: number;
  applyRssMb?: number;
  /** pgbench's count of transactions in the load. */
  txns?: number;
  stages?: StageCpu;
}

/** W5, W6: a replica resumed after a load it missed. */
interface CatchUp {
  workload: string;
  system: 'native' | 'pgferry';
  /** Source transactions of the load (pgbench's count). */
  txns: number;
  loadSeconds: number;
  seconds: number;
  /**
   * Of `seconds`, the resume itself, each sent on a connection already open: ALTER SUBSCRIPTION … ENABLE,
   * or the `setPaused` update `pgferry replica resume` sends (answered once the workflow runs again).
   */
  resumeSeconds: number;
  txnsPerSecond: number;
  cpuBusyPct: number;
  applyCpuS?: number;
  rabbitCpuS?: number;
  applyRssMb?: number;
  stages?: StageCpu;
}

interface Timing {
  seconds: number[];
  cpuBusyPct: number;
  captureCpuS?: number;
  applyCpuS?: number;
  rabbitCpuS?: number;
  stages?: StageCpu;
}


describe(`benchmark, ${N.toLocaleString('en')} rows`, () => {
  let source: PgCluster;
  let replicas: PgCluster;
  let temporal: Awaited<ReturnType<typeof startTemporal>>;
  let sourceUrl: string;
  const urls: Record<string, string> = {};
  const sourceName = `bench${Math.random().toString(36).slice(2, 8)}`;
  const results: Row[] = [];
  const oltpRuns: OltpRun[] = [];
  const catchUps: CatchUp[] = [];
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    [source, replicas, temporal] = await Promise.all([PgCluster.start({ max_wal_senders: '20', max_replication_slots: '20' }), PgCluster.start(), startTemporal()]);
    sourceUrl = await source.createDatabase('app');
    await source.withClient('app', (c) => c.query(`${SCHEMA} CREATE SCHEMA hot; CREATE SCHEMA base`));
    // pgbench's initial data is deterministic: initialized alike on the source and every replica, they start equal.
    await pgbenchInit(sourceUrl);
    await pgbenchInit(sourceUrl, 'base', 10);
    await source.withClient('app', (c) => c.query(`CREATE PUBLICATION native_pub FOR TABLE w_native, marker, hb, ${OLTP_TABLES.join(', ')}`));
    for (const kind of ['native', 'pgferry']) {
      for (const r of REPLICAS) {
        const db = `${kind}_${r}`;
        urls[db] = await replicas.createDatabase(db);
        await replicas.withClient(db, (c) => c.query(`${SCHEMA} CREATE SCHEMA hot`));
        await pgbenchInit(urls[db]);
      }
    }
    for (const r of REPLICAS) {
      await replicas.withClient(`native_${r}`, (c) =>
        c.query(`CREATE SUBSCRIPTION sub_${r} CONNECTION 'host=127.0.0.1 port=${source.port} dbname=app user=postgres' PUBLICATION native_pub WITH (copy_data = false, enabled = false)`),
      );
    }
    env = { TEMPORAL_ADDRESS: temporal.address, PGFERRY_RABBITMQ_URL: RABBIT_URL, PGFERRY_SOURCE_NAME: sourceName, PGFERRY_DATA_DIR: temporal.dataDir, PGFERRY_LOG_LEVEL: 'warn' };
  });

  afterAll(async () => {
    for (const r of REPLICAS) await replicas?.withClient(`native_${r}`, (c) => c.query(`ALTER SUBSCRIPTION sub_${r} DISABLE; ALTER SUBSCRIPTION sub_${r} SET (slot_name = NONE); DROP SUBSCRIPTION sub_${r}`)).catch(() => undefined);
    await temporal?.stop().catch(() => undefined);
    if (process.env.PGFERRY_BENCH_KEEP) console.log(`kept: source port ${source?.port}, replicas port ${replicas?.port}, stream of source ${sourceName}`);
    else {
      source?.destroy();
      replicas?.destroy();
    }
    if (!process.env.PGFERRY_BENCH_KEEP) await deleteStream(sourceName).catch(() => undefined);
    if (results.length || oltpRuns.length) report(results, oltpRuns, catchUps);
  });

  /** Which replicating PostgreSQL backend each pid is, by cluster (see StageCpu). */
  async function stagePids(): Promise<Map<number, keyof StageCpu>> {
    const out = new Map<number, keyof StageCpu>();
    const src = await source.withClient('app', (c) => c.query(`SELECT pid, application_name AS app FROM pg_stat_activity WHERE backend_type = 'walsender'`));
    for (const r of src.rows) out.set(Number(r.pid), String(r.app).startsWith('sub_') ? 'walsenderNative' : 'walsenderPgferry');
    const rep = await replicas.withClient('postgres', (c) =>
      c.query(`SELECT pid, backend_type AS kind, datname AS db, application_name AS app FROM pg_stat_activity WHERE backend_type IN ('logical replication worker', 'client backend')`),
    );
    for (const r of rep.rows) {
      if (r.kind === 'logical replication worker') out.set(Number(r.pid), 'applyWorkerNative');
      else if (String(r.db ?? '').startsWith('pgferry_') && r.app !== 'pgferry-bench') out.set(Number(r.pid), 'replicaPgferry');
    }
    return out;
  }

  /** Starts measuring the replicating backends' CPU; the function returned gives the seconds each stage used since. */
  async function stageWindow(): Promise<() => Promise<StageCpu>> {
    const before = await stagePids();
    const c0 = cpuOf([...before.keys()]);
    return async () => {
      const after = new Map([...before, ...(await stagePids())]);
      const c1 = cpuOf([...after.keys()]);
      const stages: StageCpu = { walsenderPgferry: 0, walsenderNative: 0, replicaPgferry: 0, applyWorkerNative: 0 };
      for (const [pid, stage] of after) if (c1.has(pid)) stages[stage] += c1.get(pid)! - (c0.get(pid) ?? 0);
      return stages;
    };
  }

  const marker = (db: string, name: string) => replicas.withClient(db, async (c) => Number((await c.query('SELECT v FROM marker WHERE name = $1', [name])).rows[0].v));

  /** Commit `sql` (with a marker bump) on the source; seconds until each target database shows the marker. */
  async function timed(sql: string, name: string, targets: string[], procs?: { capture: Proc; apply: Proc }): Promise<Timing> {
    const want = (await source.withClient('app', async (c) => Number((await c.query('SELECT v FROM marker WHERE name = $1', [name])).rows[0].v))) + 1;
    await source.withClient('app', async (c) => {
      await c.query('BEGIN');
      await c.query(sql, [N]);
      await c.query('UPDATE marker SET v = v + 1 WHERE name = $1', [name]);
      await c.query('COMMIT');
    });
    const stages = await stageWindow();
    const committed = Date.now();
    const cpu = cpuWindow(procs);
    const done: Record<string, number> = {};
    await waitFor(`${name} replicas to apply the transaction`, async () => {
      for (const db of targets) if (!(db in done) && (await marker(db, name)) >= want) done[db] = (Date.now() - committed) / 1000;
      return Object.keys(done).length === targets.length;
    }, 30 * 60_000, 50);
    const c = cpu();
    return { seconds: targets.map((db) => done[db]), ...c, stages: await stages() };
  }

  async function expectEqual(table: string, dbs: string[]): Promise<void> {
    const src = await fingerprint(source, 'app', table);
    for (const db of dbs) expect(await fingerprint(replicas, db, table), `${table} on ${db}`).toEqual(src);
  }

  const INSERT = (table: string) =>
    `INSERT INTO ${table} (customer_id, amount, status, payload, created_at)
     SELECT g % 1000, (g % 100000) / 100.0, (ARRAY['new','paid','shipped','void'])[1 + g % 4],
            jsonb_build_object('n', g, 's', md5(g::text)), '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 second'
     FROM generate_series(1, $1::int) g`;
  const UPDATE = (table: string) => `UPDATE ${table} SET amount = amount + 1, status = 'updated' WHERE $1::int > 0`;

  async function native(dbs: string[], fn: () => Promise<void>): Promise<void> {
    for (const db of dbs) await replicas.withClient(db, (c) => c.query(`ALTER SUBSCRIPTION sub_${db.slice('native_'.length)} ENABLE`));
    try {
      // Caught up with everything before the measurement (a bump of the marker each has to see).
      await timed('SELECT $1::int', 'native', dbs);
      await fn();
    } finally {
      for (const db of dbs) await replicas.withClient(db, (c) => c.query(`ALTER SUBSCRIPTION sub_${db.slice('native_'.length)} DISABLE`));
    }
  }

  async function pgferry(names: string[], fn: (procs: { capture: Proc; apply: Proc }) => Promise<void>): Promise<void> {
    const tables = ['public.w_pgferry', 'public.marker', 'public.hb', ...OLTP_TABLES].join(',');
    const common = ['--source', sourceUrl, '--tables', tables, ...names.flatMap((r) => ['--replica', `${r}=${urls[`pgferry_${r}`]}`])];
    const capture = startCli(['worker', '--queues', 'capture', ...common], env);
    await waitFor('the capture worker', async () => capture.output().includes('pgferry worker running'), 60_000);
    const apply = startCli(['up', '--queues', 'apply', ...common], env);
    if (process.env.PGFERRY_TEST_NODE_ARGS) console.log(`capture pid ${capture.child.pid}, apply pid ${apply.child.pid}`);
    try {
      await waitFor('pgferry up', async () => {
        if (apply.child.exitCode !== null) throw new Error(apply.output());
        return apply.output().includes('pgferry is running');
      }, 120_000);
      await timed('SELECT $1::int', 'pgferry', names.map((r) => `pgferry_${r}`));
      await fn({ capture, apply });
    } finally {
      await apply.stop();
      await capture.stop();
    }
  }

  const record = (workload: string, system: Row['system'], t: Timing, rows: number, procs?: { capture: Proc; apply: Proc }) => {
    const worst = Math.max(...t.seconds);
    results.push({
      workload,
      system,
      rows,
      seconds: t.seconds,
      cpuBusyPct: t.cpuBusyPct,
      captureCpuS: t.captureCpuS,
      applyCpuS: t.applyCpuS,
      rabbitCpuS: t.rabbitCpuS,
      stages: t.stages,
      rowsPerSecond: Math.round(rows / worst),
      captureRssMb: procs ? Math.round(peakRssMb(procs.capture.child.pid!)) : undefined,
      applyRssMb: procs ? Math.round(peakRssMb(procs.apply.child.pid!)) : undefined,
    });
  };

  bench('W1')('W1 bulk insert and W2 bulk update, one replica', async () => {
    await native(['native_r1'], async () => {
      record('W1 insert', 'native', await timed(INSERT('w_native'), 'native', ['native_r1']), N);
      await expectEqual('w_native', ['native_r1']);
      record('W2 update', 'native', await timed(UPDATE('w_native'), 'native', ['native_r1']), N);
      await expectEqual('w_native', ['native_r1']);
    });
    await pgferry(['r1'], async (procs) => {
      record('W1 insert', 'pgferry', await timed(INSERT('w_pgferry'), 'pgferry', ['pgferry_r1'], procs), N, procs);
      await expectEqual('w_pgferry', ['pgferry_r1']);
      record('W2 update', 'pgferry', await timed(UPDATE('w_pgferry'), 'pgferry', ['pgferry_r1'], procs), N, procs);
      await expectEqual('w_pgferry', ['pgferry_r1']);
    });
  }, 120 * 60_000);

  /** pgbench's TPC-B-like script, 4 clients, for `seconds`, on the tables of `schema`: its tps and transaction count. */
  async function pgbench(seconds: number, schema = 'public'): Promise<{ tps: number; txns: number }> {
    const out = await new Promise<string>((resolve, reject) => {
      const { execFile } = require('node:child_process') as typeof import('node:child_process');
      execFile(PGBENCH, ['-n', '-b', 'tpcb-like', '-c', '4', '-j', '2', '-T', String(seconds), sourceUrl], { env: { ...process.env, PGOPTIONS: `-c search_path=${schema}` } }, (err, stdout) =>
        err ? reject(err) : resolve(stdout),
      );
    });
    return { tps: Math.round(Number(/tps = ([\d.]+)/.exec(out)?.[1] ?? NaN)), txns: Number(/actually processed: (\d+)/.exec(out)?.[1] ?? NaN) };
  }

  /** Set the heartbeat row on the source now; its value as text (what a replica shows once it has everything before). */
  const beat = () => source.withClient('app', async (c) => (await c.query(`UPDATE hb SET at = clock_timestamp() WHERE id = 1 RETURNING at::text`)).rows[0].at as string);
  const shows = (db: string, at: string) => replicas.withClient(db, async (c) => (await c.query(`SELECT at::text FROM hb`)).rows[0].at === at);
  const dbOf = (system: 'native' | 'pgferry') => `${system}_r1`;

  /**
   * W3: pgbench with `attached` replicating. The source sets a heartbeat row
   * every 100 ms; each replica is polled every 20 ms, lag = poll time − the
   * heartbeat it shows (commit to visible, ±20 ms). After the load, one more
   * beat: once a replica shows it, it holds every load transaction (drain).
   */
  async function oltp(attached: ('native' | 'pgferry')[], procs?: { capture: Proc; apply: Proc }, schema = 'public'): Promise<OltpRun> {
    const lags: Record<string, number[]> = Object.fromEntries(attached.map((a) => [a, []]));
    // Sampling starts once each replica shows a beat of this run: until then it shows the last beat of an
    // earlier run, and "now − that" would count the minutes between runs as lag.
    const first = await beat();
    for (const system of attached) await waitFor(`${system} to show the first beat`, () => shows(dbOf(system), first), 600_000, 20);
    let stop = false;
    const beating = (async () => {
      while (!stop) {
        await beat();
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const watchers = attached.map(async (system) => {
      const c = new (await import('pg')).default.Client({ connectionString: urls[dbOf(system)], application_name: 'pgferry-bench' });
      await c.connect();
      try {
        while (!stop) {
          const { rows } = await c.query(`SELECT extract(epoch FROM clock_timestamp() - at) * 1000 AS ms FROM hb WHERE id = 1`);
          lags[system].push(Number(rows[0].ms));
          await new Promise((r) => setTimeout(r, 20));
        }
      } finally {
        await c.end();
      }
    });
    const stages = await stageWindow();
    const cpu = cpuWindow(procs);
    const { tps, txns } = await pgbench(OLTP_SECONDS, schema);
    const stopped = Date.now();
    const load = { ...cpu(), stages: await stages(), txns };
    stop = true;
    await beating;
    await Promise.all(watchers);
    const last = await beat();
    const run: OltpRun = { attached, tps, lag: {}, ...load };
    for (const system of attached) {
      await waitFor(`${system} to drain`, () => shows(dbOf(system), last), 600_000, 20);
      const sorted = [...lags[system]].sort((x, y) => x - y);
      const q = (p: number) => (sorted.length ? Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]) : NaN);
      run.lag[system] = { p50: q(0.5), p99: q(0.99), max: q(1), drainSeconds: (Date.now() - stopped) / 1000 };
    }
    for (const system of attached) for (const t of PGBENCH_TABLES) await expectEqual(`${schema}.${t}`, [dbOf(system)]);
    if (procs) Object.assign(run, { captureRssMb: Math.round(peakRssMb(procs.capture.child.pid!)), applyRssMb: Math.round(peakRssMb(procs.apply.child.pid!)) });
    return run;
  }

  const subscription = (on: boolean) => replicas.withClient('native_r1', (c) => c.query(`ALTER SUBSCRIPTION sub_r1 ${on ? 'ENABLE' : 'DISABLE'}`));
  const pausePgferry = async () => {
    const r = await runCli(['replica', 'pause', 'r1'], env);
    if (r.code !== 0) throw new Error(`pgferry replica pause r1: ${r.stdout}${r.stderr}`);
  };
  /** W5/W6: native resumed by ALTER SUBSCRIPTION … ENABLE, timed from the call (its few-millisecond connect included, as before). */
  const enableSubscription = async () => {
    const t0 = Date.now();
    await subscription(true);
    return { t0, answered: Date.now() };
  };
  /**
   * W5/W6 resume pgferry as native is resumed: a request on a connection
   * already open (the `setPaused` update `pgferry replica resume` sends, by
   * the same code), so the catch-up is timed from the request, not from the
   * start of a CLI process.
   */
  const resumeOnOpenConnection = async () => {
    const connection = await Connection.connect({ address: temporal.address });
    try {
      const client = new Client({ connection });
      const t0 = Date.now();
      const outcome = await request(client, client.workflow.getHandle(replicaWorkflowId('r1')), 'replica', 'resume');
      if (outcome.kind !== 'answered' || outcome.status.state === 'paused') throw new Error(`pgferry replica r1 did not resume: ${JSON.stringify(outcome)}`);
      return { t0, answered: Date.now() };
    } finally {
      await connection.close();
    }
  };

  /**
   * W5 / W6: both replicas stopped (native: subscription disabled; pgferry:
   * paused — its capture keeps running, as it would for other replicas), a
   * load they miss, then each resumed alone, timed until it shows the beat
   * set after the load.
   */
  async function catchUp(workload: string, schema: string, seconds: number, procs: { capture: Proc; apply: Proc }): Promise<void> {
    await subscription(false);
    await pausePgferry();
    const { txns } = await pgbench(seconds, schema);
    const last = await beat();
    // pgferry's capture ran through the load: let it finish putting it in the stream, so each
    // catch-up below has the machine to itself (pgferry's is then a catch-up from the log).
    const target = await source.withClient('app', async (c) => (await c.query(`SELECT pg_current_wal_lsn()::text AS lsn`)).rows[0].lsn as string);
    await waitFor('capture to have the load in the stream', async () => {
      const q = `SELECT confirmed_flush_lsn >= $2::pg_lsn AS done FROM pg_replication_slots WHERE slot_name = $1`;
      const rows = await source.withClient('app', async (c) => (await c.query(q, [`pgferry_${sourceName}`, target])).rows);
      return rows[0]?.done === true;
    }, 5 * 60_000, 200).catch(() => undefined); // the slot moves on at capture's idle heartbeat if other WAL followed the beat
    for (const system of ['native', 'pgferry'] as const) {
      const stages = await stageWindow();
      const cpu = cpuWindow(system === 'pgferry' ? procs : undefined);
      const { t0, answered: resumed } = system === 'native' ? await enableSubscription() : await resumeOnOpenConnection();
      await waitFor(`${system} to catch up`, () => shows(dbOf(system), last), 60 * 60_000, 50);
      const took = (Date.now() - t0) / 1000;
      const c = cpu();
      const used = await stages();
      catchUps.push({
        workload,
        system,
        txns,
        loadSeconds: seconds,
        seconds: took,
        resumeSeconds: (resumed - t0) / 1000,
        txnsPerSecond: Math.round(txns / took),
        cpuBusyPct: c.cpuBusyPct,
        applyCpuS: c.applyCpuS,
        rabbitCpuS: c.rabbitCpuS,
        stages: used,
        applyRssMb: system === 'pgferry' ? Math.round(peakRssMb(procs.apply.child.pid!)) : undefined,
      });
      for (const t of PGBENCH_TABLES) await expectEqual(`${schema}.${t}`, [dbOf(system)]);
    }
  }

  bench('W4')('W4 bulk insert fanned out to three replicas', async () => {
    const natives = REPLICAS.map((r) => `native_${r}`);
    await native(natives, async () => {
      for (const db of natives) await replicas.withClient(db, (c) => c.query('TRUNCATE w_native')); // disabled subscribers: same start everywhere
      await source.withClient('app', (c) => c.query('TRUNCATE w_native'));
      record('W4 fan-out ×3', 'native', await timed(INSERT('w_native'), 'native', natives), N);
      await expectEqual('w_native', natives);
    });
    await pgferry(REPLICAS, async (procs) => {
      await source.withClient('app', (c) => c.query('TRUNCATE w_pgferry'));
      await waitFor('the truncate to reach every replica', async () => {
        for (const r of REPLICAS) if ((await fingerprint(replicas, `pgferry_${r}`, 'w_pgferry')).rows !== '0') return false;
        return true;
      }, 600_000);
      record('W4 fan-out ×3', 'pgferry', await timed(INSERT('w_pgferry'), 'pgferry', REPLICAS.map((r) => `pgferry_${r}`), procs), N, procs);
      await expectEqual('w_pgferry', REPLICAS.map((r) => `pgferry_${r}`));
    });
  }, 120 * 60_000);

  bench('W3')('W3 OLTP (TPC-B-like): nothing, native, pgferry, and both at once; W6 catch-up; W5 hot rows', async () => {
    // pgferry's slot must hold everything from here on, as native's subscription has since setup
    // (when W1 ran first it was created then; PGFERRY_BENCH_ONLY=W3 starts here).
    await pgferry(['r1'], async () => undefined);
    const base = await oltp([], undefined, 'base');
    oltpRuns.push(base);
    await native(['native_r1'], async () => {
      oltpRuns.push(await oltp(['native']));
    });
    await pgferry(['r1'], async (procs) => {
      oltpRuns.push(await oltp(['pgferry'], procs));
      await native(['native_r1'], async () => {
        oltpRuns.push(await oltp(['native', 'pgferry'], procs));
        await catchUp('W6 catch-up (TPC-B-like, scale 10)', 'public', CATCHUP_SECONDS, procs);
        await catchUp('W5 hot rows (TPC-B-like, scale 1)', 'hot', HOT_SECONDS, procs);
      });
    });
  }, 180 * 60_000);
});

/**
 * Starts measuring CPU; the function it returns gives, for the time since, the whole machine's busy
 * share (% of all cores) and the CPU seconds the capture and apply processes used.
 */
function cpuWindow(procs?: { capture: Proc; apply: Proc }): () => { cpuBusyPct: number; captureCpuS?: number; applyCpuS?: number; rabbitCpuS?: number } {
  const pids = procs && [procs.capture.child.pid!, procs.apply.child.pid!];
  const rabbit = rabbitPid();
  const m0 = machineCpu();
  const p0 = pids?.map(cpuSeconds);
  const r0 = rabbit ? cpuSeconds(rabbit) : undefined;
  return () => {
    const m1 = machineCpu();
    const p1 = pids?.map(cpuSeconds);
    return {
      cpuBusyPct: Math.round((100 * (m1.busy - m0.busy)) / Math.max(1, m1.total - m0.total)),
      captureCpuS: p1 && p1[0] - p0![0],
      applyCpuS: p1 && p1[1] - p0![1],
      rabbitCpuS: rabbit && r0 !== undefined ? cpuSeconds(rabbit) - r0 : undefined,
    };
  };
}

/** The RabbitMQ server's process (the Erlang VM), whose CPU pgferry's log costs; undefined if not found. */
function rabbitPid(): number | undefined {
  try {
    const { execFileSync } = require('node:child_process') as typeof import('node:child_process');
    const pid = Number(execFileSync('pgrep', ['-o', '-f', 'beam.smp.*rabbit'], { encoding: 'utf8' }).trim().split('\n')[0]);
    return pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function report(rows: Row[], oltpRuns: OltpRun[], catchUps: CatchUp[]): void {
  const lines = [
    `Machine: ${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'unknown CPU'}), ${Math.round(os.totalmem() / 1024 ** 3)} GiB; "machine CPU busy" is the share of all cores in use.`,
    '',
    '| workload | system | rows | commit → replica (s) | rows/s | pgferry ÷ native | capture RSS (MB) | apply RSS (MB) | machine CPU busy | capture CPU (s) | apply CPU (s) |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  const cpu = (s?: number) => (s === undefined ? '' : s.toFixed(1));
  for (const r of rows) {
    const native = rows.find((x) => x.workload === r.workload && x.system === 'native');
    const ratio = r.system === 'pgferry' && native ? (r.rowsPerSecond / native.rowsPerSecond).toFixed(2) : '';
    lines.push(
      `| ${r.workload} | ${r.system} | ${r.rows} | ${r.seconds.map((s) => s.toFixed(1)).join(' / ')} | ${r.rowsPerSecond} | ${ratio} | ${r.captureRssMb ?? ''} | ${r.applyRssMb ?? ''} | ${r.cpuBusyPct ?? ''}% | ${cpu(r.captureCpuS)} | ${cpu(r.applyCpuS)} |`,
    );
  }
  if (oltpRuns.length) {
    lines.push('', `| W3 OLTP (pgbench TPC-B-like, 4 clients, scale 10, ${OLTP_SECONDS} s) | replicating | source tps | lag p50 (ms) | lag p99 (ms) | lag max (ms) | drain after load (s) | capture RSS (MB) | apply RSS (MB) | machine CPU busy (load) | capture CPU (s, load) | apply CPU (s, load) | RabbitMQ CPU (s, load) |`);
    lines.push('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const r of oltpRuns) {
      const attached = r.attached.length ? r.attached.join(' + ') : 'nothing (tables in no publication)';
      const systems = r.attached.length ? r.attached : [null];
      for (const system of systems) {
        const l = system ? r.lag[system] : undefined;
        const who = r.attached.length > 1 ? `${attached}: ${system}` : attached;
        const mine = system !== 'native';
        lines.push(
          `| W3 | ${who} | ${r.tps} | ${l?.p50 ?? ''} | ${l?.p99 ?? ''} | ${l?.max ?? ''} | ${l ? l.drainSeconds.toFixed(2) : ''} | ${mine ? (r.captureRssMb ?? '') : ''} | ${mine ? (r.applyRssMb ?? '') : ''} | ${r.cpuBusyPct}% | ${mine ? cpu(r.captureCpuS) : ''} | ${mine ? cpu(r.applyCpuS) : ''} | ${cpu(r.rabbitCpuS)} |`,
        );
      }
    }
  }
  if (catchUps.length) {
    lines.push('', '| catch-up after a load the replica missed | system | load (s) | source txns | catch-up (s) | of which the resume request (s) | txns/s applied | pgferry ÷ native | apply RSS (MB) | machine CPU busy | apply CPU (s) |');
    lines.push('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const c of catchUps) {
      const native = catchUps.find((x) => x.workload === c.workload && x.system === 'native');
      const ratio = c.system === 'pgferry' && native ? (c.txnsPerSecond / native.txnsPerSecond).toFixed(2) : '';
      lines.push(`| ${c.workload} | ${c.system} | ${c.loadSeconds} | ${c.txns} | ${c.seconds.toFixed(1)} | ${c.resumeSeconds?.toFixed(1) ?? ''} | ${c.txnsPerSecond} | ${ratio} | ${c.applyRssMb ?? ''} | ${c.cpuBusyPct}% | ${cpu(c.applyCpuS)} |`);
    }
  }
  lines.push(...stageTable(rows, oltpRuns, catchUps));
  const md = `${lines.join('\n')}\n`;
  const dir = path.join(ROOT, 'test', 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'latest.md'), `# pgferry vs native logical replication\n\n${new Date().toISOString()}, ${N} rows\n\n${md}`);
  fs.writeFileSync(path.join(dir, 'latest.json'), `${JSON.stringify({ at: new Date().toISOString(), rows: N, results: rows, oltp: oltpRuns, catchUps }, null, 2)}\n`);
  console.log(`\n${md}\n(written to test/bench/results/latest.md and latest.json)`);
}

/**
 * Issue 27, item 4: CPU seconds per stage, per 1,000 source transactions
 * (W3 with one system attached, W5/W6 catch-up) or per 1,000,000 rows (W1,
 * W2, W4): pgferry's own processes, RabbitMQ, and PostgreSQL's replicating
 * backends, against native's walsender and apply workers. Whole path =
 * everything of that system; "pgferry + RabbitMQ" is what issue 27's first
 * acceptance item bounds.
 */
function stageTable(rows: Row[], oltpRuns: OltpRun[], catchUps: CatchUp[]): string[] {
  const f = (v: number | undefined, k: number) => (v === undefined ? '' : (v * k).toFixed(3));
  const out = [
    '',
    '| CPU seconds by stage | system | per | capture | apply | RabbitMQ | walsender | replica backends / apply worker | pgferry + RabbitMQ | whole path |',
    '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  const line = (what: string, system: 'native' | 'pgferry', per: string, k: number, c: { captureCpuS?: number; applyCpuS?: number; rabbitCpuS?: number; stages?: StageCpu }) => {
    if (!c.stages) return;
    const walsender = system === 'native' ? c.stages.walsenderNative : c.stages.walsenderPgferry;
    const replica = system === 'native' ? c.stages.applyWorkerNative : c.stages.replicaPgferry;
    const own = system === 'pgferry' ? (c.captureCpuS ?? 0) + (c.applyCpuS ?? 0) + (c.rabbitCpuS ?? 0) : undefined;
    const whole = (own ?? 0) + walsender + replica;
    out.push(
      `| ${what} | ${system} | ${per} | ${system === 'pgferry' ? f(c.captureCpuS, k) : ''} | ${system === 'pgferry' ? f(c.applyCpuS, k) : ''} | ${system === 'pgferry' ? f(c.rabbitCpuS, k) : ''} | ${f(walsender, k)} | ${f(replica, k)} | ${f(own, k)} | ${f(whole, k)} |`,
    );
  };
  for (const r of rows) line(r.workload, r.system, '1,000,000 rows', 1_000_000 / r.rows, r);
  for (const r of oltpRuns) if (r.attached.length === 1 && r.txns) line(`W3 OLTP, ${OLTP_SECONDS} s load`, r.attached[0], '1,000 source txns', 1000 / r.txns, r);
  for (const c of catchUps) line(c.workload, c.system, '1,000 txns caught up', 1000 / c.txns, c);
  return out.length > 3 ? out : [];
}

/** pgbench's tables and data in `schema` of the database at `url` (scale 10 by default; W5's hot rows use scale 1). */
async function pgbenchInit(url: string, schema?: string, scale?: number): Promise<void> {
  const { execFileSync } = require('node:child_process') as typeof import('node:child_process');
  const run = (sch: string, sc: number) => execFileSync(PGBENCH, ['-i', '-q', '-s', String(sc), '-I', 'dtGvp', url], { env: { ...process.env, PGOPTIONS: `-c search_path=${sch}` }, stdio: 'pipe' });
  if (schema) return void run(schema, scale ?? 10);
  run('public', 10);
  run('hot', 1);
}
