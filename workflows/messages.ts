import { defineQuery, defineSignal } from '@temporalio/workflow';

/**
 * Temporal-visible names: a compatibility contract. Never rename a released
 * signal, query, workflow type or activity; add new ones instead.
 */
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

export const pauseSignal = defineSignal('pause');
export const resumeSignal = defineSignal('resume');
export const replicaStatusQuery = defineQuery<ReplicaStatus>('status');
export const captureStatusQuery = defineQuery<CaptureStatus>('status');

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
