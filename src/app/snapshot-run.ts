/**
 * Run `replica add --snapshot` as the workflow pgferry-snapshot-<name>,
 * served by a worker in this process (the only one that knows the
 * replica's URL). Progress comes from the copy's heartbeat — the same
 * figures the Temporal UI shows. Run again after an interruption, it
 * re-attaches to the workflow, whose copy is retried from the start.
 */
import { WorkflowFailedError, WorkflowIdConflictPolicy } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { Config } from '../config';
import { replicaUrl, requireSourceUrl } from '../config';
import { ConfigError, PgferryError, UnavailableError } from '../errors';
import { snapshotTaskQueue, snapshotWorkflowId } from '../names';
import type { TableProgress } from '../snapshot/copy';
import { connectClient, temporalAddress } from '../temporal/connection';
import { pendingActivity } from '../temporal/inspect';
import { startSnapshotWorker } from './worker';
import { snapshotWorkflow } from '../../workflows';
import type { SnapshotResult } from '../../workflows/messages';

export async function runSnapshot(
  config: Config,
  replica: string,
  o: { createTables: boolean; parallel: number; onProgress: (tables: TableProgress[]) => void },
): Promise<SnapshotResult> {
  requireSourceUrl(config);
  replicaUrl(config, replica);
  const client = await connectClient(config.temporal);
  const worker = await startSnapshotWorker(config, temporalAddress(config.temporal), replica);
  try {
    const id = snapshotWorkflowId(replica);
    const handle = await client.workflow.start(snapshotWorkflow, {
      workflowId: id,
      taskQueue: snapshotTaskQueue(replica),
      args: [{ replica, source: config.source.name, createTables: o.createTables, parallel: o.parallel }],
      workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
    });
    let done = false;
    const result = handle.result().finally(() => (done = true));
    while (!done) {
      await Promise.race([result.catch(() => undefined), new Promise((r) => setTimeout(r, 500))]);
      if (done) break;
      const act = await pendingActivity(client, id).catch(() => null);
      if (Array.isArray(act?.heartbeat)) o.onProgress(act.heartbeat as TableProgress[]);
    }
    return await result.catch((err) => {
      throw asPgferryError(err);
    });
  } finally {
    await worker.shutdown();
    await client.connection.close().catch(() => undefined);
  }
}

/** The copy's own error (its class travels as the failure type), so the CLI exits as it would have in-process. */
function asPgferryError(err: unknown): unknown {
  if (!(err instanceof WorkflowFailedError)) return err;
  let cause: unknown = err.cause;
  while (cause && !(cause instanceof ApplicationFailure) && (cause as { cause?: unknown }).cause) cause = (cause as { cause?: unknown }).cause;
  if (!(cause instanceof ApplicationFailure)) return err;
  if (cause.type === 'ConfigError') return new ConfigError(cause.message);
  if (cause.type === 'UnavailableError') return new UnavailableError(cause.message);
  return new PgferryError(cause.message);
}
