/**
 * What the CLI shows: workflow status (query), plus what Temporal knows about
 * the activity in flight — its live heartbeat and the error of its last failed
 * attempt while it is being retried.
 */
import { Client, WorkflowNotFoundError } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { captureStatusQuery, CaptureStatus, replicaStatusQuery, ReplicaStatus } from '../../workflows/messages';
import { ConfigError } from '../errors';
import { lsnDistance } from '../lsn';
import { captureWorkflowId, replicaWorkflowId } from '../names';
import type { CaptureProgress } from '../capture/contract';
import type { ApplyProgress } from '../apply/apply-session';

export interface ActivityView {
  attempt: number;
  lastError: string | null;
  heartbeat: unknown;
}

export async function pendingActivity(client: Client, workflowId: string): Promise<ActivityView | null> {
  const desc = await client.workflow.getHandle(workflowId).describe();
  const a = desc.raw.pendingActivities?.[0];
  if (!a) return null;
  const payload = a.heartbeatDetails?.payloads?.[0];
  return {
    attempt: a.attempt ?? 1,
    lastError: a.lastFailure?.message ?? null,
    heartbeat: payload ? defaultPayloadConverter.fromPayload(payload as never) : null,
  };
}

export interface CaptureView extends CaptureStatus {
  live: CaptureProgress | null;
  retrying: string | null;
}

export async function captureView(client: Client, source: string): Promise<CaptureView> {
  const id = captureWorkflowId(source);
  try {
    const status = await client.workflow.getHandle(id).query(captureStatusQuery);
    const act = await pendingActivity(client, id);
    const live = (act?.heartbeat as CaptureProgress | null) ?? null;
    return {
      ...status,
      confirmedLsn: live?.confirmedLsn ?? status.confirmedLsn,
      lastCommitTime: live?.lastCommitTime ?? status.lastCommitTime,
      live,
      retrying: act && act.attempt > 1 ? act.lastError : null,
    };
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) {
      throw new ConfigError(`source '${source}': no capture is running (workflow ${id} not found); start it with pgferry up`);
    }
    throw err;
  }
}

export interface ReplicaView extends ReplicaStatus {
  /** Bytes of source WAL between the newest captured transaction and the newest applied one. */
  lagBytes: number | null;
  /** Source commit-time difference between the newest captured and the newest applied transaction. */
  lagSeconds: number | null;
  /** Error of the activity attempt being retried right now (a server down, …). */
  retrying: string | null;
  captureError: string | null;
}

export async function replicaView(client: Client, replica: string, capture?: CaptureView | null): Promise<ReplicaView> {
  const id = replicaWorkflowId(replica);
  let status: ReplicaStatus;
  try {
    status = await client.workflow.getHandle(id).query(replicaStatusQuery);
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) {
      throw new ConfigError(`replica '${replica}' not found (no workflow ${id}); pgferry replica list shows the replicas`);
    }
    throw err;
  }
  const act = await pendingActivity(client, id);
  status = withLiveSession(status, act?.heartbeat);
  if (capture === undefined) capture = await captureView(client, status.source).catch(() => null);
  const captured = capture?.live?.lastLsn ?? null;
  const lagBytes = captured ? lsnDistance(status.appliedLsn, captured) : null;
  let lagSeconds: number | null = null;
  if (lagBytes === 0) lagSeconds = 0;
  else if (lagBytes && capture?.lastCommitTime && status.lastCommitTime) {
    lagSeconds = Math.max(0, (Date.parse(capture.lastCommitTime) - Date.parse(status.lastCommitTime)) / 1000);
  }
  return {
    ...status,
    lagBytes,
    lagSeconds,
    retrying: act && act.attempt > 1 ? act.lastError : null,
    captureError: capture?.lastError ?? capture?.retrying ?? null,
  };
}

/**
 * The workflow's status counts the sessions that returned; the session in
 * flight reports its own totals in its heartbeats (activities: ApplyProgress).
 */
export function withLiveSession(status: ReplicaStatus, heartbeat: unknown): ReplicaStatus {
  const live = heartbeat as Partial<ApplyProgress> | null | undefined;
  if (!live || typeof live !== 'object' || !live.batches || !live.appliedLsn) return status;
  return {
    ...status,
    appliedLsn: live.appliedLsn,
    offset: live.offset ?? status.offset,
    lastCommitTime: live.lastCommitTime ?? status.lastCommitTime,
    caughtUp: live.caughtUp ?? status.caughtUp,
    txns: status.txns + (live.txns ?? 0),
    changes: status.changes + (live.changes ?? 0),
    batches: status.batches + live.batches,
    rowsPerSecond: live.rowsPerSecond ?? status.rowsPerSecond,
  };
}

export async function listReplicaNames(client: Client): Promise<string[]> {
  const names: string[] = [];
  for await (const wf of client.workflow.list({ query: `WorkflowType = 'replicaWorkflow' AND ExecutionStatus = 'Running'` })) {
    names.push(wf.workflowId.replace(/^pgferry-replica-/, ''));
  }
  return names.sort();
}
