/**
 * What the CLI shows: workflow status (query), plus what Temporal knows about
 * the activity in flight — its live heartbeat and the error of its last failed
 * attempt while it is being retried.
 */
import { Client, WorkflowExecutionDescription, WorkflowNotFoundError } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { optionalTsToMs } from '@temporalio/common/lib/time';
import { captureStatusQuery, CaptureStatus, replicaStatusQuery, ReplicaStatus, startingReplicaStatus, startingSubscriberStatus, SubscriberStatus, subscriberStatusQuery } from '../../workflows/messages';
import { ConfigError } from '../errors';
import { lsnDistance } from '../lsn';
import { captureWorkflowId, replicaWorkflowId, subscriberWorkflowId } from '../names';
import type { CaptureProgress } from '../capture/contract';
import type { ApplyProgress } from '../apply/apply-session';

export interface ActivityView {
  attempt: number;
  lastError: string | null;
  heartbeat: unknown;
  /** Seconds since Temporal last received a heartbeat of this activity (null: none yet). */
  heartbeatAgeSeconds: number | null;
}

export async function pendingActivity(client: Client, workflowId: string): Promise<ActivityView | null> {
  return activityOf(await client.workflow.getHandle(workflowId).describe());
}

/** The activity in flight of a described workflow, if any. */
function activityOf(desc: WorkflowExecutionDescription): ActivityView | null {
  const a = desc.raw.pendingActivities?.[0];
  if (!a) return null;
  const payload = a.heartbeatDetails?.payloads?.[0];
  const beatAt = optionalTsToMs(a.lastHeartbeatTime as never);
  return {
    attempt: a.attempt ?? 1,
    lastError: a.lastFailure?.message ?? null,
    heartbeat: payload ? defaultPayloadConverter.fromPayload(payload as never) : null,
    heartbeatAgeSeconds: beatAt === undefined ? null : Math.max(0, (Date.now() - beatAt) / 1000),
  };
}

/**
 * A workflow that is no longer running (terminated in the UI, `replica stop`,
 * or ended by an error) still answers queries with its last status, which
 * may well say `running`: every view checks the workflow's own status first
 * and shows such a one as `stopped`, naming how it ended and how to start it.
 */
export type Stopped = 'stopped';

/** A workflow's description, or null when there is no such workflow. */
export async function describeOrNull(client: Client, id: string): Promise<WorkflowExecutionDescription | null> {
  try {
    return await client.workflow.getHandle(id).describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return null;
    throw err;
  }
}

async function described(client: Client, id: string, notFound: () => Error): Promise<WorkflowExecutionDescription> {
  const desc = await describeOrNull(client, id);
  if (!desc) throw notFound();
  return desc;
}

function endedHow(desc: WorkflowExecutionDescription): string {
  return `its workflow ${desc.workflowId} is not running (it ended ${desc.status.name.toLowerCase()})`;
}

export interface CaptureView extends Omit<CaptureStatus, 'state'> {
  state: CaptureStatus['state'] | Stopped;
  live: CaptureProgress | null;
  retrying: string | null;
  /** Seconds since the running capture activity last heartbeated (every 2 s while it streams); null when none is running. */
  heartbeatAgeSeconds: number | null;
}

export async function captureView(client: Client, source: string): Promise<CaptureView> {
  const id = captureWorkflowId(source);
  const notFound = () => new ConfigError(`source '${source}': no capture is running (workflow ${id} not found); start it with pgferry up`);
  const desc = await described(client, id, notFound);
  let status: CaptureStatus;
  try {
    status = await client.workflow.getHandle(id).query(captureStatusQuery);
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) throw notFound();
    throw err;
  }
  if (desc.status.name !== 'RUNNING') {
    return { ...status, state: 'stopped', lastError: `${endedHow(desc)}: nothing is captured; pgferry up starts it`, live: null, retrying: null, heartbeatAgeSeconds: null };
  }
  const act = activityOf(desc);
  const live = (act?.heartbeat as CaptureProgress | null) ?? null;
  return {
    ...status,
    confirmedLsn: live?.confirmedLsn ?? status.confirmedLsn,
    lastCommitTime: live?.lastCommitTime ?? status.lastCommitTime,
    live,
    retrying: act && act.attempt > 1 ? act.lastError : null,
    heartbeatAgeSeconds: act?.heartbeatAgeSeconds ?? null,
  };
}

export interface ReplicaView extends Omit<ReplicaStatus, 'state'> {
  state: ReplicaStatus['state'] | Stopped;
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
  const notFound = () => new ConfigError(`replica '${replica}' not found (no workflow ${id}); pgferry replica list shows the replicas`);
  const desc = await described(client, id, notFound);
  const running = desc.status.name === 'RUNNING';
  let status: ReplicaStatus;
  try {
    status = await client.workflow.getHandle(id).query(replicaStatusQuery);
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) throw notFound();
    if (running) throw err;
    // An ended run whose last status cannot be read (its worker is down): what is known.
    status = startingReplicaStatus(replica, '', new Date().toISOString());
  }
  if (!running) {
    // Its checkpoint is in the replica; the lag is not shown: nothing applies it.
    return {
      ...status,
      state: 'stopped',
      lastError: `${endedHow(desc)}; pgferry replica start ${replica} continues from its checkpoint`,
      rowsPerSecond: 0,
      lagBytes: null,
      lagSeconds: null,
      retrying: null,
      captureError: null,
    };
  }
  const act = activityOf(desc);
  status = withLiveSession(status, act?.heartbeat);
  if (capture === undefined) capture = await captureView(client, status.source).catch(() => null);
  return {
    ...status,
    ...lagBehind(capture, status.appliedLsn, status.lastCommitTime),
    retrying: act && act.attempt > 1 ? act.lastError : null,
    captureError: capture?.lastError ?? capture?.retrying ?? null,
  };
}

/** How far a consumer at `lsn` (its last transaction committed at `commitTime`) is behind what capture has published. */
function lagBehind(capture: CaptureView | null | undefined, lsn: string | null, commitTime: string | null): { lagBytes: number | null; lagSeconds: number | null } {
  const captured = capture?.live?.lastLsn ?? null;
  const lagBytes = captured && lsn ? lsnDistance(lsn, captured) : null;
  let lagSeconds: number | null = null;
  if (lagBytes === 0) lagSeconds = 0;
  else if (lagBytes && capture?.lastCommitTime && commitTime) {
    lagSeconds = Math.max(0, (Date.parse(capture.lastCommitTime) - Date.parse(commitTime)) / 1000);
  }
  return { lagBytes, lagSeconds };
}

/**
 * An application subscriber's workflow as status and the metrics show it.
 * Its status query is answered by the application's own worker: while that
 * worker is down the state is `not answering` (the source is then unknown).
 */
export interface SubscriberView extends Omit<SubscriberStatus, 'state' | 'source'> {
  state: SubscriberStatus['state'] | 'not answering';
  source: string | null;
  lagBytes: number | null;
  lagSeconds: number | null;
  /** Error of the delivery attempt being retried right now. */
  retrying: string | null;
}

/** How long a subscriber's worker may take to answer its status query before it counts as not answering. */
const SUBSCRIBER_QUERY_MS = 3_000;

export async function subscriberView(client: Client, subscriber: string, capture?: CaptureView | null, queryMs = SUBSCRIBER_QUERY_MS): Promise<SubscriberView> {
  const id = subscriberWorkflowId(subscriber);
  let status: SubscriberStatus;
  try {
    status = await client.withDeadline(Date.now() + queryMs, () => client.workflow.getHandle(id).query(subscriberStatusQuery));
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) {
      throw new ConfigError(`subscriber '${subscriber}' not found (no workflow ${id}); pgferry subscriber status lists the running ones`);
    }
    return {
      ...startingSubscriberStatus(subscriber, '', new Date().toISOString()),
      source: null,
      state: 'not answering',
      lastError: `its application's worker (task queue ${id}) did not answer within ${queryMs / 1000} s: is it running?`,
      lagBytes: null,
      lagSeconds: null,
      retrying: null,
    };
  }
  const act = await pendingActivity(client, id).catch(() => null); // only for display
  if (capture === undefined) capture = await captureView(client, status.source).catch(() => null);
  return { ...status, ...lagBehind(capture, status.lsn, status.lastCommitTime), retrying: act && act.attempt > 1 ? act.lastError : null };
}

export async function listSubscriberNames(client: Client): Promise<string[]> {
  const names: string[] = [];
  for await (const wf of client.workflow.list({ query: `WorkflowType = 'subscriberWorkflow' AND ExecutionStatus = 'Running'` })) {
    names.push(wf.workflowId.replace(/^pgferry-subscriber-/, ''));
  }
  return names.sort();
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
