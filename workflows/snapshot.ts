/** The snapshot workflow of `replica add --snapshot` (see snapshotWorkflow below). */
import { proxyActivities, RetryPolicy } from '@temporalio/workflow';
import type { createActivities } from '../activities';
import { NON_RETRYABLE } from '../src/errors';
import type { SnapshotResult } from './messages';

type Activities = ReturnType<typeof createActivities>;

const retry: RetryPolicy = { initialInterval: '2 seconds', backoffCoefficient: 2, maximumInterval: '1 minute', nonRetryableErrorTypes: NON_RETRYABLE };

const { copySnapshot } = proxyActivities<Activities>({
  startToCloseTimeout: '24 hours',
  // The copy heartbeats its table progress several times a second; a copy whose process died is retried from scratch.
  heartbeatTimeout: '30 seconds',
  retry,
});

export interface SnapshotInput {
  replica: string;
  source: string;
  createTables: boolean;
  parallel: number;
}

/**
 * `replica add --snapshot` as a durable, visible execution: one activity
 * copies the snapshot (its heartbeat is the live progress: rows, bytes and
 * tables, shown by the CLI and in the Temporal UI); a failed attempt is
 * retried from the start, a permanent error (a non-empty table, a missing
 * type) ends the workflow with the reason.
 */
export async function snapshotWorkflow(input: SnapshotInput): Promise<SnapshotResult> {
  return copySnapshot(input);
}
