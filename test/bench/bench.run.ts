import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PgCluster } from '../helpers/pg-cluster';
import { startTemporal } from '../helpers/temporal';
import { cpuSeconds, machineCpu, peakRssMb, startCli, Proc, ROOT } from '../helpers/procs';
import { deleteStream, fingerprint, RABBIT_URL } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';

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
 *   W3  pgbench OLTP mix (4 clients; insert + update + delete per transaction):
 *       source tps without replication, with native, with pgferry; commit-to-
 *       replica lag p50/p99/max from a 100 ms heartbeat; drain time after the load
 *
 * PGFERRY_BENCH_ROWS scales N down for a quick run, PGFERRY_BENCH_OLTP_SECONDS
 * the W3 duration (default 30). Results: a table on stdout,
 * test/bench/results/latest.{json,md}.
 */
const N = Number(process.env.PGFERRY_BENCH_ROWS ?? 1_000_000);
const TABLE = `(id bigserial PRIMARY KEY, customer_id int, amount numeric(12,2), status text, payload jsonb, created_at timestamptz)`;
const SCHEMA = `
  CREATE TABLE w_native ${TABLE};
  CREATE TABLE w_pgferry ${TABLE};
  CREATE TABLE marker (name text PRIMARY KEY, v bigint NOT NULL);
  INSERT INTO marker VALUES ('native', 0), ('pgferry', 0);
  CREATE TABLE oltp_native (id bigserial PRIMARY KEY, v int NOT NULL, t text);
  CREATE TABLE oltp_pgferry (id bigserial PRIMARY KEY, v int NOT NULL, t text);
  CREATE TABLE hb_native (id int PRIMARY KEY, at timestamptz NOT NULL);
  CREATE TABLE hb_pgferry (id int PRIMARY KEY, at timestamptz NOT NULL);
`;
const OLTP_SECONDS = Number(process.env.PGFERRY_BENCH_OLTP_SECONDS ?? 30);
const PGBENCH = '/usr/lib/postgresql/15/bin/pgbench';
const REPLICAS = ['r1', 'r2', 'r3'];

interface Row {
  workload: string;
  /** W3: source tps, commit-to-replica lag percentiles, drain time after the load. */
  oltp?: { tps: number; lagP50: number; lagP99: number; lagMax: number; drainSeconds: number; cpuBusyPct: number; captureCpuS?: number; applyCpuS?: number };
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
}

interface Timing {
  seconds: number[];
  cpuBusyPct: number;
  captureCpuS?: number;
  applyCpuS?: number;
}


describe(`benchmark, ${N.toLocaleString('en')} rows`, () => {
  let source: PgCluster;
  let replicas: PgCluster;
  let temporal: Awaited<ReturnType<typeof startTemporal>>;
  let sourceUrl: string;
  const urls: Record<string, string> = {};
  const sourceName = `bench${Math.random().toString(36).slice(2, 8)}`;
  const results: Row[] = [];
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    [source, replicas, temporal] = await Promise.all([PgCluster.start({ max_wal_senders: '20', max_replication_slots: '20' }), PgCluster.start(), startTemporal()]);
    sourceUrl = await source.createDatabase('app');
    await source.withClient('app', (c) => c.query(`${SCHEMA} CREATE PUBLICATION native_pub FOR TABLE w_native, marker, oltp_native, hb_native`));
    for (const kind of ['native', 'pgferry']) {
      for (const r of REPLICAS) {
        const db = `${kind}_${r}`;
        urls[db] = await replicas.createDatabase(db);
        await replicas.withClient(db, (c) => c.query(SCHEMA));
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
    source?.destroy();
    replicas?.destroy();
    await deleteStream(sourceName).catch(() => undefined);
    if (results.length) report(results);
  });

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
    const committed = Date.now();
    const cpu = cpuWindow(procs);
    const done: Record<string, number> = {};
    await waitFor(`${name} replicas to apply the transaction`, async () => {
      for (const db of targets) if (!(db in done) && (await marker(db, name)) >= want) done[db] = (Date.now() - committed) / 1000;
      return Object.keys(done).length === targets.length;
    }, 30 * 60_000, 50);
    return { seconds: targets.map((db) => done[db]), ...cpu() };
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
    const common = ['--source', sourceUrl, '--tables', 'public.w_pgferry,public.marker,public.oltp_pgferry,public.hb_pgferry', ...names.flatMap((r) => ['--replica', `${r}=${urls[`pgferry_${r}`]}`])];
    const capture = startCli(['worker', '--queues', 'capture', ...common], env);
    await waitFor('the capture worker', async () => capture.output().includes('pgferry worker running'), 60_000);
    const apply = startCli(['up', '--queues', 'apply', ...common], env);
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
      rowsPerSecond: Math.round(rows / worst),
      captureRssMb: procs ? Math.round(peakRssMb(procs.capture.child.pid!)) : undefined,
      applyRssMb: procs ? Math.round(peakRssMb(procs.apply.child.pid!)) : undefined,
    });
  };

  it('W1 bulk insert and W2 bulk update, one replica', async () => {
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

  /**
   * pgbench, 4 clients: each transaction inserts a row, updates one, deletes one. A heartbeat row
   * on the source is set to clock_timestamp() every 100 ms; the replica is polled every 20 ms and
   * lag = poll time − the heartbeat it shows (commit to visible on the replica, ±20 ms).
   */
  async function oltp(kind: 'native' | 'pgferry', replicaDb: string | null, procs?: { capture: Proc; apply: Proc }): Promise<Row['oltp']> {
    const table = `oltp_${kind}`;
    const hb = `hb_${kind}`;
    await source.withClient('app', (c) => c.query(`INSERT INTO ${table} (v, t) SELECT g, 'seed' FROM generate_series(1, 100000) g; INSERT INTO ${hb} VALUES (1, clock_timestamp()) ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at`));
    const script = path.join(temporal.dataDir, `${kind}.sql`);
    fs.writeFileSync(script, `\\set id random(1, 200000)\nBEGIN;\nINSERT INTO ${table} (v, t) VALUES (:id, 'new');\nUPDATE ${table} SET v = v + 1 WHERE id = :id;\nDELETE FROM ${table} WHERE id = :id + 7;\nEND;\n`);
    if (replicaDb) await waitFor('the seed rows to arrive', async () => (await fingerprint(replicas, replicaDb, table)).rows === (await fingerprint(source, 'app', table)).rows, 600_000);
    const lags: number[] = [];
    let stop = false;
    const beat = (async () => {
      while (!stop) {
        await source.withClient('app', (c) => c.query(`UPDATE ${hb} SET at = clock_timestamp() WHERE id = 1`));
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const watch = replicaDb
      ? (async () => {
          const c = new (await import('pg')).default.Client({ connectionString: urls[replicaDb] });
          await c.connect();
          try {
            while (!stop) {
              const { rows } = await c.query(`SELECT extract(epoch FROM clock_timestamp() - at) * 1000 AS ms FROM ${hb} WHERE id = 1`);
              lags.push(Number(rows[0].ms));
              await new Promise((r) => setTimeout(r, 20));
            }
          } finally {
            await c.end();
          }
        })()
      : Promise.resolve();
    const cpu = cpuWindow(procs);
    const out = await new Promise<string>((resolve, reject) => {
      const { execFile } = require('node:child_process') as typeof import('node:child_process');
      execFile(PGBENCH, ['-n', '-c', '4', '-j', '2', '-T', String(OLTP_SECONDS), '-f', script, sourceUrl], (err, stdout) => (err ? reject(err) : resolve(stdout)));
    });
    const tps = Number(/tps = ([\d.]+)/.exec(out)?.[1] ?? NaN);
    const stopped = Date.now();
    const load = cpu();
    stop = true;
    await beat;
    await watch;
    let drainSeconds = 0;
    if (replicaDb) {
      // One more beat, begun after the load ended: once the replica shows it, it holds every load transaction.
      const last = await source.withClient('app', async (c) => (await c.query(`UPDATE ${hb} SET at = clock_timestamp() WHERE id = 1 RETURNING at::text`)).rows[0].at);
      await waitFor('the replica to drain', async () => (await replicas.withClient(replicaDb, (c) => c.query(`SELECT at::text FROM ${hb}`))).rows[0].at === last, 600_000, 20);
      drainSeconds = (Date.now() - stopped) / 1000;
      await expectEqual(table, [replicaDb]);
    }
    const sorted = [...lags].sort((a, b) => a - b);
    const q = (p: number) => (sorted.length ? Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]) : NaN);
    return {
      tps: Math.round(tps),
      lagP50: q(0.5),
      lagP99: q(0.99),
      lagMax: q(1),
      drainSeconds,
      ...load,
    };
  }

  it('W3 OLTP: pgbench insert/update/delete mix, lag and drain', async () => {
    // Baseline: nothing replicating (every subscription disabled, pgferry stopped).
    const base = await oltp('native', null);
    results.push({ workload: 'W3 OLTP, no replication', system: 'native', rows: 0, seconds: [], rowsPerSecond: 0, oltp: base });
    await native(['native_r1'], async () => {
      results.push({ workload: 'W3 OLTP', system: 'native', rows: 0, seconds: [], rowsPerSecond: 0, oltp: await oltp('native', 'native_r1') });
    });
    await pgferry(['r1'], async (procs) => {
      const r = await oltp('pgferry', 'pgferry_r1', procs);
      results.push({ workload: 'W3 OLTP', system: 'pgferry', rows: 0, seconds: [], rowsPerSecond: 0, oltp: r, captureRssMb: Math.round(peakRssMb(procs.capture.child.pid!)), applyRssMb: Math.round(peakRssMb(procs.apply.child.pid!)) });
    });
  }, 120 * 60_000);

  it('W4 bulk insert fanned out to three replicas', async () => {
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
});

/**
 * Starts measuring CPU; the function it returns gives, for the time since, the whole machine's busy
 * share (% of all cores) and the CPU seconds the capture and apply processes used.
 */
function cpuWindow(procs?: { capture: Proc; apply: Proc }): () => { cpuBusyPct: number; captureCpuS?: number; applyCpuS?: number } {
  const pids = procs && [procs.capture.child.pid!, procs.apply.child.pid!];
  const m0 = machineCpu();
  const p0 = pids?.map(cpuSeconds);
  return () => {
    const m1 = machineCpu();
    const p1 = pids?.map(cpuSeconds);
    return {
      cpuBusyPct: Math.round((100 * (m1.busy - m0.busy)) / Math.max(1, m1.total - m0.total)),
      captureCpuS: p1 && p1[0] - p0![0],
      applyCpuS: p1 && p1[1] - p0![1],
    };
  };
}

function report(rows: Row[]): void {
  const lines = [
    '| workload | system | rows | commit → replica (s) | rows/s | pgferry ÷ native | capture RSS (MB) | apply RSS (MB) | machine CPU busy | capture CPU (s) | apply CPU (s) |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  const cpu = (s?: number) => (s === undefined ? '' : s.toFixed(1));
  for (const r of rows.filter((x) => !x.oltp)) {
    const native = rows.find((x) => x.workload === r.workload && x.system === 'native');
    const ratio = r.system === 'pgferry' && native ? (r.rowsPerSecond / native.rowsPerSecond).toFixed(2) : '';
    lines.push(
      `| ${r.workload} | ${r.system} | ${r.rows} | ${r.seconds.map((s) => s.toFixed(1)).join(' / ')} | ${r.rowsPerSecond} | ${ratio} | ${r.captureRssMb ?? ''} | ${r.applyRssMb ?? ''} | ${r.cpuBusyPct ?? ''}% | ${cpu(r.captureCpuS)} | ${cpu(r.applyCpuS)} |`,
    );
  }
  const oltp = rows.filter((r) => r.oltp);
  if (oltp.length) {
    lines.push('', '| W3 OLTP (pgbench, 4 clients) | system | source tps | lag p50 (ms) | lag p99 (ms) | lag max (ms) | drain after load (s) | capture RSS (MB) | apply RSS (MB) | machine CPU busy (load) | capture CPU (s, load) | apply CPU (s, load) |');
    lines.push('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const r of oltp) {
      const o = r.oltp!;
      const replicated = r.workload !== 'W3 OLTP, no replication';
      lines.push(`| ${r.workload} | ${replicated ? r.system : '—'} | ${o.tps} | ${replicated ? o.lagP50 : ''} | ${replicated ? o.lagP99 : ''} | ${replicated ? o.lagMax : ''} | ${replicated ? o.drainSeconds.toFixed(2) : ''} | ${r.captureRssMb ?? ''} | ${r.applyRssMb ?? ''} | ${o.cpuBusyPct}% | ${cpu(o.captureCpuS)} | ${cpu(o.applyCpuS)} |`);
    }
  }
  const md = `${lines.join('\n')}\n`;
  const dir = path.join(ROOT, 'test', 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'latest.md'), `# pgferry vs native logical replication\n\n${new Date().toISOString()}, ${N} rows\n\n${md}`);
  fs.writeFileSync(path.join(dir, 'latest.json'), `${JSON.stringify({ at: new Date().toISOString(), rows: N, results: rows }, null, 2)}\n`);
  console.log(`\n${md}\n(written to test/bench/results/latest.md and latest.json)`);
}
