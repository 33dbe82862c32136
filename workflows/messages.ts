/**
 * The signals, queries and updates of pgferry's workflows, and the statuses
 * they carry: defined once, imported by the workflows and the CLI.
 *
 * Temporal-visible names: a compatibility contract. Never rename a released
 * signal, query, update, workflow type or activity; add new ones instead.
 */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { SearchAttributeKey } from '@temporalio/common/lib/search-attributes';

/**
 * `failed`: a change was rejected or the replica does not match; fix it, then resume.
 * `needs_resync`: the stream no longer holds what the replica needs; only a resync (or rewind) helps.
 */
export type ReplicaState = 'starting' | 'running' | 'paused' | 'failed' | 'needs_resync';

export interface ReplicaStatus {
  replica: string;
  source: string;
  state: ReplicaState;
  /** Commit LSN of the last source transaction applied (mirror of pgferry.progress on the replica). */
  appliedLsn: string;
  /** Stream offset of the last message consumed. */
  offset: number | null;
  lastCommitTime: string | null;
  /** True when the last batch found nothing more in the stream. */
  caughtUp: boolean;
  txns: number;
  changes: number;
  batches: number;
  lastError: string | null;
  updatedAt: string;
  /** Changes applied per second over about the last minute (0 while paused or stopped; null before the first batch). */
  rowsPerSecond: number | null;
}

export interface CaptureStatus {
  source: string;
  state: 'running' | 'failed' | 'needs_resync';
  confirmedLsn: string | null;
  lastCommitTime: string | null;
  txns: number;
  changes: number;
  runs: number;
  lastError: string | null;
  updatedAt: string;
}

/** A replica's status before its first batch (the workflow's first run; what is known of an ended run that cannot be queried). */
export function startingReplicaStatus(replica: string, source: string, now: string): ReplicaStatus {
  return { replica, source, state: 'starting', appliedLsn: '0/0', offset: null, lastCommitTime: null, caughtUp: false, txns: 0, changes: 0, batches: 0, lastError: null, updatedAt: now, rowsPerSecond: null };
}

export const pauseSignal = defineSignal('pause');
export const resumeSignal = defineSignal('resume');
export const replicaStatusQuery = defineQuery<ReplicaStatus>('status');

/** The input of the `setPaused` update; anything else is rejected by its validator. */
export interface SetPausedRequest {
  paused: boolean;
}

/**
 * `pause` / `resume` that answer when the state is reached (see
 * workflows/pause-switch.ts for exactly when), with the status at that moment.
 * Same change as the signals, which stay for the Temporal UI and older
 * clients. Replica and subscriber share the name: each registers its own.
 */
export const replicaSetPausedUpdate = defineUpdate<ReplicaStatus, [SetPausedRequest]>('setPaused');
export const captureStatusQuery = defineQuery<CaptureStatus>('status');

/**
 * Custom search attributes, so the Temporal Web UI (and `client.workflow.list`)
 * can filter pgferry's workflows: `PgferryState = 'failed'`,
 * `PgferryLagSeconds > 60`, `PgferrySource = 'main'`. They must be registered
 * on the namespace (dev server flags, `pgferry temporal setup`, or `pgferry up`)
 * before a workflow may carry them: see src/temporal/search-attributes.ts.
 */
export const PGFERRY_STATE: SearchAttributeKey<'KEYWORD'> = { name: 'PgferryState', type: 'KEYWORD' };
/** How far behind the replica was at its last batch: 0 when caught up (or less than a second behind). */
export const PGFERRY_LAG_SECONDS: SearchAttributeKey<'DOUBLE'> = { name: 'PgferryLagSeconds', type: 'DOUBLE' };
export const PGFERRY_SOURCE: SearchAttributeKey<'KEYWORD'> = { name: 'PgferrySource', type: 'KEYWORD' };
export const PGFERRY_SEARCH_ATTRIBUTES = [PGFERRY_STATE, PGFERRY_LAG_SECONDS, PGFERRY_SOURCE] as const;

/**
 * Sent by `pgferry up` to a running workflow that was started before the
 * search attributes were registered: from then on it keeps them up to date
 * (and sets its memo's description). Only send it once they are registered:
 * Temporal rejects a workflow task that upserts an unknown attribute.
 */
export const enableSearchAttributesSignal = defineSignal<[{ description?: string }]>('enableSearchAttributes');

/** What `replica add --snapshot` reports when its snapshot workflow completes. */
export interface SnapshotResult {
  position: string;
  offset: number | null;
  rows: number;
  bytes: number;
  tables: number;
  created: string[];
  warnings: string[];
}

/**
 * An application subscriber run as a Temporal workflow (subscriberWorkflow).
 * `failed`: its handler kept failing on a change (named in lastError); fix the
 * handler, restart its worker, then send `resume`.
 * `needs_resync`: the stream no longer holds what it needs.
 */
export interface SubscriberStatus {
  subscriber: string;
  source: string;
  state: 'starting' | 'running' | 'paused' | 'failed' | 'needs_resync';
  /** Commit LSN of the last source transaction it finished (mirror of its row in the positions table). */
  lsn: string | null;
  offset: number | null;
  lastCommitTime: string | null;
  caughtUp: boolean;
  /** Transactions and changes delivered since the subscriber began (its positions row). */
  txns: number;
  changes: number;
  batches: number;
  lastError: string | null;
  updatedAt: string;
}

/** A subscriber's status before its first batch. */
export function startingSubscriberStatus(subscriber: string, source: string, now: string): SubscriberStatus {
  return { subscriber, source, state: 'starting', lsn: null, offset: null, lastCommitTime: null, caughtUp: false, txns: 0, changes: 0, batches: 0, lastError: null, updatedAt: now };
}

export const subscriberStatusQuery = defineQuery<SubscriberStatus>('status');
export const subscriberSetPausedUpdate = defineUpdate<SubscriberStatus, [SetPausedRequest]>('setPaused');
