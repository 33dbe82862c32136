import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import { cli, createWorld, startUp, upArgs, waitForEqual, World } from '../helpers/fixture';
import { freePort } from '../helpers/ports';
import { startCli } from '../helpers/procs';
import { waitFor } from '../helpers/wait';

/**
 * The Prometheus endpoint of a worker process, scraped over HTTP while a real
 * workload runs: applied counts that follow what was written, lag that appears
 * while a replica is paused and goes back to 0 after resume, the batch
 * duration histogram, replica state and errors when a replica refuses a
 * change, and a taken port that costs only the endpoint, not replication.
 */
const SCHEMA = `CREATE TABLE orders (id int PRIMARY KEY, amount numeric NOT NULL, note text)`;
const TABLES = ['orders'];

type Labels = Record<string, string>;
interface Sample {
  name: string;
  labels: Labels;
  value: number;
}

/** Prometheus text format → samples (enough of it for pgferry's metrics: no escaped quotes in label values). */
function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels: Labels = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

class Scrape {
  constructor(
    readonly text: string,
    readonly samples: Sample[],
  ) {}
  /** The value of the one sample with that name and (at least) those labels; undefined if absent. */
  get(name: string, labels: Labels = {}): number | undefined {
    const hits = this.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
    if (hits.length > 1) throw new Error(`${name} ${JSON.stringify(labels)}: ${hits.length} samples, expected one`);
    return hits[0]?.value;
  }
}

describe('Prometheus metrics endpoint', () => {
  let w: World;
  let up: Proc;
  let port: number;
  let base: string;

  const scrape = async (): Promise<Scrape> => {
    const res = await fetch(`${base}/metrics`);
    const text = await res.text();
    if (res.status !== 200) throw new Error(`GET /metrics: ${res.status} ${text}`);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    return new Scrape(text, parse(text));
  };

  const write = async (from: number, n: number, opts: { oneTxn?: number } = {}) => {
    await w.source.withClient('app', async (c) => {
      for (let i = from; i < from + n; i++) await c.query('INSERT INTO orders VALUES ($1, $2, $3)', [i, i, `row ${i}`]);
      // A multi-row transaction: one transaction, oneTxn rows
      if (opts.oneTxn) await c.query(`INSERT INTO orders SELECT g, g, 'bulk' FROM generate_series($1::int, $2::int) g`, [from + n, from + n + opts.oneTxn - 1]);
    });
  };

  const src = () => ({ source: w.sourceName });
  const rows = (s: Scrape, replica: string) => s.get('pgferry_replica_rows_applied_total', { replica, ...src() });
  const txns = (s: Scrape, replica: string) => s.get('pgferry_replica_transactions_applied_total', { replica, ...src() });
  const batches = (s: Scrape, replica: string) => s.get('pgferry_apply_batch_duration_seconds_count', { replica, ...src() }) ?? 0;
  const state = (s: Scrape, replica: string) => s.samples.find((x) => x.name === 'pgferry_replica_state' && x.labels.replica === replica && x.value === 1)?.labels.state;

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a', 'b'], schema: SCHEMA });
    port = await freePort();
    base = `http://127.0.0.1:${port}`;
    up = await startUp(w, upArgs(w), { PGFERRY_METRICS_PORT: String(port), PGFERRY_METRICS_HOST: '127.0.0.1' });
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  it('serves /metrics with replica state, process metrics and the slot, and says where metrics are on /', async () => {
    expect(up.output()).toContain(`serving Prometheus metrics at http://127.0.0.1:${port}/metrics`);
    const index = await fetch(`${base}/`);
    expect(index.status).toBe(200);
    expect(await index.text()).toContain('/metrics');
    expect((await fetch(`${base}/nothing`)).status).toBe(404);

    const s = await waitFor('both replicas running in the metrics', async () => {
      const x = await scrape();
      return state(x, 'a') === 'running' && state(x, 'b') === 'running' ? x : null;
    }, 60_000, 250);
    expect(s.get('pgferry_scrape_ok', { part: 'temporal' })).toBe(1);
    expect(s.get('pgferry_scrape_ok', { part: 'slot' })).toBe(1);
    // Every state is listed, 0 but for the current one, so alerts can match state="failed" == 1.
    for (const st of ['starting', 'paused', 'failed', 'needs_resync']) expect(s.get('pgferry_replica_state', { replica: 'a', ...src(), state: st })).toBe(0);
    expect(s.get('pgferry_capture_state', { ...src(), state: 'running' })).toBe(1);
    // The capture activity heartbeats every 2 s: a fresh age (an alert fires above 120 s).
    const age = await waitFor('the capture heartbeat age', async () => (await scrape()).get('pgferry_capture_heartbeat_age_seconds', src()), 30_000);
    expect(age).toBeLessThan(30);
    expect(s.get('pgferry_slot_wal_retained_bytes', src())).toBeGreaterThanOrEqual(0);
    expect(s.get('pgferry_slot_wal_retained_warning', src())).toBe(0); // far below the 1 GiB default
    expect(s.get('process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(s.text).toMatch(/^# TYPE pgferry_replica_rows_applied_total counter$/m);
    expect(s.text).toMatch(/^# TYPE pgferry_apply_batch_duration_seconds histogram$/m);
    // Names only: no connection string, host or password reaches the metrics.
    expect(s.text).not.toMatch(/postgres(ql)?:\/\/|amqp:\/\//);
    expect(s.text).not.toContain(w.sourceUrl);
  });

  it('counts rows and transactions applied as the workload is written, and observes batch durations', async () => {
    const before = await scrape();
    const rowsA0 = rows(before, 'a') ?? 0;
    const txnsA0 = txns(before, 'a') ?? 0;
    const rowsB0 = rows(before, 'b') ?? 0;
    const txnsB0 = txns(before, 'b') ?? 0;
    const batchesA0 = batches(before, 'a');

    // 120 single-row transactions and one transaction of 80 rows: 200 rows, 121 transactions.
    await write(1, 120, { oneTxn: 80 });
    await Promise.all([waitForEqual(w, 'a', TABLES), waitForEqual(w, 'b', TABLES)]);
    const after = await waitFor('the applied counts in the metrics to take in the workload', async () => {
      const s = await scrape();
      return rows(s, 'a') === rowsA0 + 200 && rows(s, 'b') === rowsB0 + 200 ? s : null;
    }, 20_000, 250);
    expect(txns(after, 'a')).toBe(txnsA0 + 121);
    expect(txns(after, 'b')).toBe(txnsB0 + 121);
    expect(batches(after, 'a')).toBeGreaterThan(batchesA0);
    expect(after.get('pgferry_apply_batch_duration_seconds_sum', { replica: 'a', ...src() })).toBeGreaterThan(0);
    // Buckets are cumulative: the +Inf bucket holds every batch.
    expect(after.get('pgferry_apply_batch_duration_seconds_bucket', { replica: 'a', ...src(), le: '+Inf' })).toBe(batches(after, 'a'));
    // Caught up: no lag.
    const caughtUp = await waitFor('lag 0 for both replicas', async () => {
      const s = await scrape();
      return s.get('pgferry_replica_lag_bytes', { replica: 'a', ...src() }) === 0 && s.get('pgferry_replica_lag_bytes', { replica: 'b', ...src() }) === 0 ? s : null;
    }, 20_000, 250);
    expect(caughtUp.get('pgferry_replica_lag_seconds', { replica: 'a', ...src() })).toBe(0);
    expect(caughtUp.get('pgferry_capture_transactions_total', src())).toBeGreaterThanOrEqual(121);
  });

  it('shows lag for a paused replica and 0 again after resume, with its applied counts held then caught up', async () => {
    expect((await cli(w, ['replica', 'pause', 'b'])).code).toBe(0);
    const paused = await waitFor('replica b paused in the metrics', async () => {
      const s = await scrape();
      return state(s, 'b') === 'paused' ? s : null;
    }, 20_000, 200);
    const heldRows = rows(paused, 'b')!;
    const heldTxns = txns(paused, 'b')!;
    const rowsA0 = rows(paused, 'a')!;

    await write(1000, 150);
    await waitForEqual(w, 'a', TABLES);
    // Lag comes from the capture's heartbeat, delivered every 2 s.
    const lagging = await waitFor('lag of paused replica b in the metrics', async () => {
      const s = await scrape();
      return (s.get('pgferry_replica_lag_bytes', { replica: 'b', ...src() }) ?? 0) > 0 ? s : null;
    }, 15_000, 250);
    expect(lagging.get('pgferry_replica_lag_seconds', { replica: 'b', ...src() })).toBeGreaterThan(0);
    expect(rows(lagging, 'b')).toBe(heldRows);
    expect(txns(lagging, 'b')).toBe(heldTxns);
    expect(state(lagging, 'b')).toBe('paused');
    const aMoved = await waitFor('replica a to count the new rows', async () => {
      const s = await scrape();
      return rows(s, 'a') === rowsA0 + 150 ? s : null;
    }, 20_000, 250);
    expect(state(aMoved, 'a')).toBe('running');

    expect((await cli(w, ['replica', 'resume', 'b'])).code).toBe(0);
    await waitForEqual(w, 'b', TABLES);
    const resumed = await waitFor('replica b back to lag 0 in the metrics', async () => {
      const s = await scrape();
      return s.get('pgferry_replica_lag_bytes', { replica: 'b', ...src() }) === 0 && rows(s, 'b') === heldRows + 150 ? s : null;
    }, 20_000, 250);
    expect(txns(resumed, 'b')).toBe(heldTxns + 150);
    expect(state(resumed, 'b')).toBe('running');
    expect(resumed.get('pgferry_replica_lag_seconds', { replica: 'b', ...src() })).toBe(0);
  });

  it('reports a replica that refuses a change as failed and counts the apply error; running again after the fix', async () => {
    const errors0 = (await scrape()).get('pgferry_errors_total', { component: 'apply', replica: 'a', ...src() }) ?? 0;
    await w.replicas.withClient('replica_a', (c) => c.query('ALTER TABLE orders ADD CONSTRAINT positive CHECK (amount >= 0) NOT VALID'));
    await w.source.withClient('app', (c) => c.query(`INSERT INTO orders VALUES (5000, -1, 'refused by a')`));
    const failed = await waitFor('replica a failed in the metrics', async () => {
      const s = await scrape();
      return state(s, 'a') === 'failed' ? s : null;
    }, 30_000, 250);
    expect(failed.get('pgferry_replica_state', { replica: 'a', ...src(), state: 'running' })).toBe(0);
    expect(failed.get('pgferry_errors_total', { component: 'apply', replica: 'a', ...src() })).toBeGreaterThan(errors0);
    expect(state(failed, 'b')).toBe('running');

    await w.replicas.withClient('replica_a', (c) => c.query('ALTER TABLE orders DROP CONSTRAINT positive'));
    expect((await cli(w, ['replica', 'resume', 'a'])).code).toBe(0);
    await waitForEqual(w, 'a', TABLES);
    await waitFor('replica a running with lag 0 in the metrics', async () => {
      const s = await scrape();
      return state(s, 'a') === 'running' && s.get('pgferry_replica_lag_bytes', { replica: 'a', ...src() }) === 0;
    }, 20_000, 250);
  });

  it('answers within its time limit while Temporal does not answer, with what it knows, and recovers', async () => {
    // Freeze the Temporal server (SIGSTOP): its connections stay open and calls hang, the worst case for a scrape.
    const temporal = w.temporal.process;
    temporal.kill('SIGSTOP');
    try {
      const t0 = Date.now();
      const s = await scrape();
      const seconds = (Date.now() - t0) / 1000;
      expect(seconds).toBeLessThan(4); // bounded at ~2 s
      expect(s.get('pgferry_scrape_ok', { part: 'temporal' })).toBe(0);
      expect(s.get('pgferry_replica_lag_bytes', { replica: 'a', ...src() })).toBeUndefined(); // unknown: left out, not stale
      // What does not depend on Temporal is still there.
      expect(s.get('pgferry_scrape_ok', { part: 'slot' })).toBe(1);
      expect(s.get('pgferry_slot_wal_retained_bytes', src())).toBeGreaterThanOrEqual(0);
      expect(batches(s, 'a')).toBeGreaterThan(0);
    } finally {
      temporal.kill('SIGCONT');
    }
    // The child's stderr arrives through a pipe, possibly after the HTTP answer: wait for it.
    await waitFor('the scrape problem in the log', async () => /metrics: cannot read temporal status for this scrape/.test(up.output()), 10_000, 100);
    await waitFor('the replicas back in the metrics after Temporal answers again', async () => {
      const s = await scrape();
      return s.get('pgferry_scrape_ok', { part: 'temporal' }) === 1 && state(s, 'a') === 'running' && state(s, 'b') === 'running';
    }, 60_000, 500);
  });

  it('a second worker on a taken port warns (port, cause, fix) and keeps working; the first keeps serving', async () => {
    // Two workers on one machine with the same metrics port: the second cannot have it, and must still run.
    const takenPort = port;
    const worker = startCli(['worker', '--queues', 'capture', '--source', w.sourceUrl, '--metrics-port', String(takenPort)], { ...w.env, PGFERRY_METRICS_HOST: '127.0.0.1' });
    try {
      await waitFor('the second worker to run', async () => {
        if (worker.child.exitCode !== null) throw new Error(`exited with ${worker.child.exitCode}:\n${worker.output()}`);
        return /pgferry worker running/.test(worker.output());
      }, 60_000);
      const out = worker.output();
      expect(out).toContain(`cannot serve Prometheus metrics on 127.0.0.1:${takenPort}: the port is already in use`);
      expect(out).toMatch(/metrics\.port .*PGFERRY_METRICS_PORT/);
      // It keeps running; replication and the first endpoint carry on.
      await w.source.withClient('app', (c) => c.query(`INSERT INTO orders VALUES (6000, 1, 'after the second worker')`));
      await waitForEqual(w, 'a', TABLES);
      expect(worker.child.exitCode).toBeNull();
      expect(state(await scrape(), 'a')).toBe('running');
      expect(await worker.stop()).toBe(0);
    } finally {
      await worker.stop();
    }
  });
});
