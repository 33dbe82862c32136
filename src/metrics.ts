import * as http from 'node:http';
import type { Client } from '@temporalio/client';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Config } from './config';
import { ConfigError, describeCause } from './errors';
import { logger } from './logger';
import { redactText } from './redact';
import { captureMode } from './capture/mode';
import { connectClient } from './temporal/connection';
import { captureView, CaptureView, listReplicaNames, replicaView, ReplicaView } from './temporal/inspect';
import type { CaptureStatus, ReplicaState } from '../workflows/messages';

/**
 * Prometheus metrics of a worker process (`pgferry up`, `pgferry worker`),
 * served on metrics.port / metrics.host at /metrics.
 *
 * Two kinds:
 * - observed here: the apply batch duration histogram and the error counter,
 *   fed by the activities that run in *this* process (several worker
 *   processes: sum them across instances);
 * - read at scrape time: state, lag and applied totals of every replica of
 *   this process's source, from the replica workflows' `status` query and the
 *   capture's heartbeat (src/temporal/inspect.ts), and the source slot's
 *   retained WAL when this process serves the capture queue. These are the
 *   same numbers from every worker process (aggregate with max, not sum).
 *
 * Scrape-time reads are bounded (SCRAPE_TIMEOUT_MS): what did not answer in
 * time is left out of that scrape and pgferry_scrape_ok says so. Labels carry
 * names only (replica, source), never a connection string.
 */
export const registry = new Registry();
const SCRAPE_TIMEOUT_MS = 2000;

const REPLICA_STATES: ReplicaState[] = ['starting', 'running', 'paused', 'failed', 'needs_resync'];
const CAPTURE_STATES: CaptureStatus['state'][] = ['running', 'failed', 'needs_resync'];

// --- Observed by this process's activities ---------------------------------------------------

const applyBatchDuration = new Histogram({
  name: 'pgferry_apply_batch_duration_seconds',
  help: 'Duration of successful applyBatch activities run by this process (a batch waits up to batch.max_wait_ms for changes, so an idle replica shows ~1 s batches)',
  labelNames: ['replica', 'source'] as const,
  buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 5, 10, 30, 60, 120],
  registers: [registry],
});

const errorsTotal = new Counter({
  name: 'pgferry_errors_total',
  help: 'Failed activity attempts in this process (retried or not), by component: apply (labels replica, source) or capture (label source)',
  labelNames: ['component', 'replica', 'source'] as const,
  registers: [registry],
});

/** Call at the start of an applyBatch attempt; call the returned function when it succeeded. */
export function applyBatchTimer(replica: string, source: string): () => void {
  return applyBatchDuration.startTimer({ replica, source }) as () => void;
}

export function countError(component: 'apply' | 'capture', labels: { replica?: string; source: string }): void {
  errorsTotal.inc({ component, ...labels });
}

// --- Read at scrape time ------------------------------------------------------------------------

const replicaLabels = ['replica', 'source'] as const;
const lagBytes = new Gauge({
  name: 'pgferry_replica_lag_bytes',
  help: 'Source WAL bytes between the newest captured transaction and the newest one applied to the replica (absent while unknown)',
  labelNames: replicaLabels,
  registers: [registry],
});
const lagSeconds = new Gauge({
  name: 'pgferry_replica_lag_seconds',
  help: 'Source commit-time difference between the newest captured and the newest applied transaction (absent while unknown)',
  labelNames: replicaLabels,
  registers: [registry],
});
const replicaState = new Gauge({
  name: 'pgferry_replica_state',
  help: `1 for the replica's current state, 0 for the others (${REPLICA_STATES.join(', ')})`,
  labelNames: [...replicaLabels, 'state'] as const,
  registers: [registry],
});
const replicaRetrying = new Gauge({
  name: 'pgferry_replica_retrying',
  help: "1 while the replica's activity is being retried after a failed attempt (a server down, …)",
  labelNames: replicaLabels,
  registers: [registry],
});
// Counters mirroring the replica workflow's own totals (status query) rather than counting what this
// process applied: with several worker processes, batches of one replica run in any of them, so a
// per-process count would show only a share. The workflow's totals cover all of them (they start
// again from 0 after a resync or a rewind, which rate() treats as a counter reset).
const rowsApplied = new Counter({
  name: 'pgferry_replica_rows_applied_total',
  help: 'Row changes applied to the replica (from its workflow status: all worker processes)',
  labelNames: replicaLabels,
  registers: [registry],
});
const txnsApplied = new Counter({
  name: 'pgferry_replica_transactions_applied_total',
  help: 'Source transactions applied to the replica (from its workflow status: all worker processes)',
  labelNames: replicaLabels,
  registers: [registry],
});
const captureState = new Gauge({
  name: 'pgferry_capture_state',
  help: `1 for the capture's current state, 0 for the others (${CAPTURE_STATES.join(', ')})`,
  labelNames: ['source', 'state'] as const,
  registers: [registry],
});
const captureTxns = new Counter({
  name: 'pgferry_capture_transactions_total',
  help: 'Source transactions captured into the change stream (workflow status plus the running capture heartbeat)',
  labelNames: ['source'] as const,
  registers: [registry],
});
const slotRetained = new Gauge({
  name: 'pgferry_slot_wal_retained_bytes',
  help: "WAL the source keeps for pgferry's replication slot (pg_current_wal_lsn() - restart_lsn); only from processes serving the capture queue",
  labelNames: ['source'] as const,
  registers: [registry],
});
const slotWarning = new Gauge({
  name: 'pgferry_slot_wal_retained_warning',
  help: '1 when the slot retains more WAL than sources[].slot_warn_bytes (PGFERRY_SLOT_WARN_BYTES)',
  labelNames: ['source'] as const,
  registers: [registry],
});
const scrapeOk = new Gauge({
  name: 'pgferry_scrape_ok',
  help: `1 when this scrape read that part in time (temporal: replica and capture status; slot: the source), 0 when it failed or took over ${SCRAPE_TIMEOUT_MS / 1000} s`,
  labelNames: ['part'] as const,
  registers: [registry],
});

const scrapeGauges = [lagBytes, lagSeconds, replicaState, replicaRetrying, captureState, slotRetained, slotWarning];
const scrapeCounters = [rowsApplied, txnsApplied, captureTxns];

let defaultsCollected = false;

/** Resolve `p`, or reject after `ms` (the work itself is left to finish or fail on its own). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within the ${SCRAPE_TIMEOUT_MS / 1000} s scrape time limit`)), Math.max(0, ms));
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export interface MetricsServer {
  url: string;
  close(): Promise<void>;
}

/**
 * Serve /metrics on config.metrics.host:port. Returns null when the port is 0
 * (off) or cannot be opened: a taken port is logged as a warning and the
 * process goes on replicating without metrics.
 */
export async function startMetricsServer(config: Config, temporalAddress: string, opts: { servesCapture: boolean }): Promise<MetricsServer | null> {
  const { port, host } = config.metrics;
  if (port === 0) return null;
  if (!defaultsCollected) {
    defaultsCollected = true;
    collectDefaultMetrics({ register: registry }); // process_*, nodejs_*: the usual names, for the usual dashboards
  }
  const source = config.source.name;
  const log = logger.child({ component: 'metrics' });
  const secrets = [config.source.url ?? ''].filter(Boolean);
  const problems = new Map<string, string>(); // part → last problem logged, so a lasting one is logged once

  const note = (part: string, err: unknown) => {
    const msg = redactText(describeCause(err), secrets);
    if (problems.get(part) !== msg) log.warn({ part, error: msg }, `metrics: cannot read ${part} status for this scrape`);
    problems.set(part, msg);
  };
  const recovered = (part: string) => problems.delete(part);

  // --- Temporal: one client, opened on first use and kept; re-opened after a failed connect.
  let clientP: Promise<Client> | null = null;
  const client = () => {
    if (!clientP) {
      const opening = connectClient(config.temporal, { address: temporalAddress });
      clientP = opening;
      opening.catch(() => {
        if (clientP === opening) clientP = null;
      });
    }
    return clientP;
  };

  const readTemporal = async (deadline: number): Promise<{ capture: CaptureView | null; views: ReplicaView[] }> => {
    const c = await within(client(), deadline - Date.now(), 'Temporal connection');
    return c.withDeadline(deadline, async () => {
      const capture = await captureView(c, source).catch((err) => {
        if (err instanceof ConfigError) return null; // no capture workflow (yet)
        throw err;
      });
      // Replicas running in Temporal, plus those this process is configured for (listing may lag a start).
      const names = new Set([...(await listReplicaNames(c)), ...config.replicas.map((r) => r.name)]);
      const views = await Promise.all(
        [...names].map((n) =>
          replicaView(c, n, capture).catch((err) => {
            if (err instanceof ConfigError) return null; // not (or no longer) a replica
            throw err;
          }),
        ),
      );
      // Other sources' replicas may share the namespace: report this process's source only.
      return { capture, views: views.filter((v): v is ReplicaView => v !== null && v.source === source) };
    });
  };

  // --- Source slot (processes serving the capture queue, WAL mode): slotHealth opens one short connection per
  // scrape; a source that does not answer in time is left out of that scrape (its query finishes or fails on its own).
  const url = config.source.url;
  const slotHealth = captureMode(config).slotHealth;
  const readsSlot = opts.servesCapture && slotHealth !== null && Boolean(url);
  const readSlot = async (deadline: number): Promise<number | null> =>
    (await within(slotHealth!(url!, source), deadline - Date.now(), 'source slot query')).retainedBytes;

  const refresh = async () => {
    const deadline = Date.now() + SCRAPE_TIMEOUT_MS;
    const [temporal, slot] = await Promise.allSettled([
      within(readTemporal(deadline), SCRAPE_TIMEOUT_MS + 100, 'Temporal status'),
      readsSlot ? readSlot(deadline) : Promise.resolve(undefined),
    ]);
    for (const m of scrapeGauges) m.reset();
    for (const m of scrapeCounters) m.reset();
    if (temporal.status === 'fulfilled') {
      recovered('temporal');
      scrapeOk.set({ part: 'temporal' }, 1);
      const { capture, views } = temporal.value;
      if (capture) {
        for (const s of CAPTURE_STATES) captureState.set({ source, state: s }, capture.state === s ? 1 : 0);
        captureTxns.inc({ source }, capture.txns + (capture.live?.txns ?? 0));
      }
      for (const v of views) {
        const l = { replica: v.replica, source: v.source };
        if (v.lagBytes !== null) lagBytes.set(l, v.lagBytes);
        if (v.lagSeconds !== null) lagSeconds.set(l, v.lagSeconds);
        for (const s of REPLICA_STATES) replicaState.set({ ...l, state: s }, v.state === s ? 1 : 0);
        replicaRetrying.set(l, v.retrying ? 1 : 0);
        rowsApplied.inc(l, v.changes);
        txnsApplied.inc(l, v.txns);
      }
    } else {
      note('temporal', temporal.reason);
      scrapeOk.set({ part: 'temporal' }, 0);
    }
    if (readsSlot) {
      if (slot.status === 'fulfilled') {
        recovered('slot');
        scrapeOk.set({ part: 'slot' }, 1);
        if (typeof slot.value === 'number') {
          slotRetained.set({ source }, slot.value);
          slotWarning.set({ source }, slot.value > config.source.slotWarnBytes ? 1 : 0);
        }
      } else {
        note('slot', slot.reason);
        scrapeOk.set({ part: 'slot' }, 0);
      }
    }
  };

  // Concurrent scrapes share one refresh.
  let inFlight: Promise<void> | null = null;
  const refreshOnce = () => {
    inFlight ??= refresh().finally(() => {
      inFlight = null;
    });
    return inFlight;
  };

  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/metrics') {
      refreshOnce()
        .catch((err) => log.warn({ error: redactText(describeCause(err), secrets) }, 'metrics: refresh failed'))
        .then(() => registry.metrics())
        .then(
          (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
          (err) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics: ${describeCause(err)}\n`),
        );
      return;
    }
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end(`pgferry worker (source '${source}'): Prometheus metrics at /metrics\n`);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; metrics are at /metrics\n');
  });

  const listening = await new Promise<boolean>((resolve) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'EADDRINUSE'
          ? 'the port is already in use (another pgferry worker on this machine?)'
          : err.code === 'EACCES'
            ? 'not allowed to listen on it'
            : describeCause(err);
      log.warn(
        { port, host, code: err.code },
        `metrics: cannot serve Prometheus metrics on ${host}:${port}: ${why}; replication goes on without a metrics endpoint in this process. ` +
          `Fix: give each worker process its own port with metrics.port in the config file, PGFERRY_METRICS_PORT or --metrics-port (0 turns the endpoint off)`,
      );
      resolve(false);
    });
    server.listen(port, host, () => resolve(true));
  });
  if (!listening) {
    server.close();
    return null;
  }
  server.on('error', (err) => log.warn({ error: describeCause(err) }, 'metrics: server error'));
  const shownHost = host === '0.0.0.0' || host === '::' ? 'localhost' : host;
  const where = `http://${shownHost}:${port}/metrics`;
  log.info({ port, host }, `metrics: serving Prometheus metrics at ${where}`);
  return {
    url: where,
    async close() {
      server.closeAllConnections?.();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      const c = clientP;
      clientP = null;
      await c?.then((x) => x.connection.close()).catch(() => undefined);
    },
  };
}
