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
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { CaptureView, ReplicaView, SubscriberView } from '../temporal/inspect';

export const registry = new Registry();
/** How long one scrape may take to read Temporal and the source. */
export const SCRAPE_TIMEOUT_MS = 2000;

/** `stopped`: the workflow is not running (terminated, `replica stop`); see temporal/inspect.ts. */
export const REPLICA_STATES: ReplicaView['state'][] = ['starting', 'running', 'paused', 'failed', 'needs_resync', 'stopped'];
export const CAPTURE_STATES: CaptureView['state'][] = ['running', 'failed', 'needs_resync', 'stopped'];
export const SUBSCRIBER_STATES: SubscriberView['state'][] = ['starting', 'running', 'paused', 'failed', 'needs_resync', 'not answering'];
/** Label values are identifiers: `not answering` is shown as not_answering. */
const stateLabel = (s: string) => s.replace(/ /g, '_');

// --- Observed by this process's activities ---------------------------------------------------

const applyBatchDuration = new Histogram({
  name: 'pgferry_apply_batch_duration_seconds',
  help: 'Duration of committed apply batches run by this process (a batch waits up to batch.max_wait_ms for changes, so an idle replica shows ~1 s batches)',
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

/** Call when an apply batch starts; call the returned function when it committed. */
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
const captureHeartbeatAge = new Gauge({
  name: 'pgferry_capture_heartbeat_age_seconds',
  help: 'Seconds since the running capture activity last heartbeated (it does every 2 s while streaming; absent when no capture activity is running)',
  labelNames: ['source'] as const,
  registers: [registry],
});
const subscriberLabels = ['subscriber', 'source'] as const;
const subscriberState = new Gauge({
  name: 'pgferry_subscriber_state',
  help: `1 for the subscriber workflow's current state, 0 for the others (${SUBSCRIBER_STATES.map(stateLabel).join(', ')}; not_answering: its application's worker did not answer, source "unknown")`,
  labelNames: [...subscriberLabels, 'state'] as const,
  registers: [registry],
});
const subscriberLagSeconds = new Gauge({
  name: 'pgferry_subscriber_lag_seconds',
  help: 'Source commit-time difference between the newest captured transaction and the newest one the subscriber finished (absent while unknown)',
  labelNames: subscriberLabels,
  registers: [registry],
});
const subscriberTxns = new Counter({
  name: 'pgferry_subscriber_transactions_total',
  help: 'Source transactions the subscriber finished (from its workflow status)',
  labelNames: subscriberLabels,
  registers: [registry],
});
const scrapeOk = new Gauge({
  name: 'pgferry_scrape_ok',
  help: `1 when this scrape read that part in time (temporal: replica and capture status; slot: the source), 0 when it failed or took over ${SCRAPE_TIMEOUT_MS / 1000} s`,
  labelNames: ['part'] as const,
  registers: [registry],
});

const scrapeGauges = [lagBytes, lagSeconds, replicaState, replicaRetrying, captureState, captureHeartbeatAge, slotRetained, slotWarning, subscriberState, subscriberLagSeconds];
const scrapeCounters = [rowsApplied, txnsApplied, captureTxns, subscriberTxns];

/** What one scrape read: Temporal's view (or why not), and the slot's retained WAL (undefined: not read by this process). */
export interface ScrapeReading {
  source: string;
  temporal: { ok: true; capture: CaptureView | null; views: ReplicaView[]; subscribers?: SubscriberView[] } | { ok: false };
  slot?: { ok: true; retainedBytes: number | null; warnBytes: number } | { ok: false };
}

/** Replace the scrape-time figures with this reading's. */
export function recordScrape(r: ScrapeReading): void {
  const { source } = r;
  for (const m of scrapeGauges) m.reset();
  for (const m of scrapeCounters) m.reset();
  scrapeOk.set({ part: 'temporal' }, r.temporal.ok ? 1 : 0);
  if (r.temporal.ok) {
    const { capture, views } = r.temporal;
    if (capture) {
      for (const s of CAPTURE_STATES) captureState.set({ source, state: s }, capture.state === s ? 1 : 0);
      captureTxns.inc({ source }, capture.txns + (capture.live?.txns ?? 0));
      if (capture.heartbeatAgeSeconds !== null) captureHeartbeatAge.set({ source }, capture.heartbeatAgeSeconds);
    }
    for (const v of r.temporal.subscribers ?? []) {
      const l = { subscriber: v.subscriber, source: v.source ?? 'unknown' };
      for (const s of SUBSCRIBER_STATES) subscriberState.set({ ...l, state: stateLabel(s) }, v.state === s ? 1 : 0);
      if (v.lagSeconds !== null) subscriberLagSeconds.set(l, v.lagSeconds);
      subscriberTxns.inc(l, v.txns);
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
  }
  if (!r.slot) return;
  scrapeOk.set({ part: 'slot' }, r.slot.ok ? 1 : 0);
  if (r.slot.ok && typeof r.slot.retainedBytes === 'number') {
    slotRetained.set({ source }, r.slot.retainedBytes);
    slotWarning.set({ source }, r.slot.retainedBytes > r.slot.warnBytes ? 1 : 0);
  }
}

let defaultsCollected = false;

/** process_* and nodejs_* too: the usual names, for the usual dashboards (once per process). */
export function collectProcessMetrics(): void {
  if (defaultsCollected) return;
  defaultsCollected = true;
  collectDefaultMetrics({ register: registry });
}
