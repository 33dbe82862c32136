/**
 * The replica workflow: one per replica, applying the change stream in
 * batches (see replicaWorkflow below).
 */
import {
  ActivityCancellationType,
  CancellationScope,
  condition,
  isCancellation,
  makeContinueAsNewFunc,
  ApplicationFailure,
  patched,
  proxyActivities,
  setHandler,
  workflowInfo,
  RetryPolicy,
} from '@temporalio/workflow';
import type { createActivities } from '../activities';
import { NON_RETRYABLE } from '../src/errors';
import { ReplicaStatus, enableSearchAttributesSignal, startingReplicaStatus, replicaSetPausedUpdate, replicaStatusQuery } from './messages';
import { PauseSwitch } from './pause-switch';
import { RateWindow, addBatch, emptyRateWindow, lagSeconds, lagWorthShowing, ratePerSecond } from './replica-metrics';
import { describeIfUndescribed, keepVisibility, show, shownLag, shownState } from './visibility';
import { stopUntilResumed } from './stopped';
import { isPermanentFailure } from './errors';
import type { SessionResult } from '../src/apply/apply-session';

type Activities = ReturnType<typeof createActivities>;

const retry: RetryPolicy = { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', nonRetryableErrorTypes: NON_RETRYABLE };

const { applyBatch } = proxyActivities<Activities>({
  startToCloseTimeout: '30 minutes',
  // Batches heartbeat at least every second; a dead apply worker's batch is retried after this.
  heartbeatTimeout: '10 seconds',
  retry,
});
const { applySession } = proxyActivities<Activities>({
  // A session returns after batch.apply_session_seconds at its next batch boundary; one batch holding a
  // huge transaction may take long. A dead worker is noticed by the heartbeat timeout, not this.
  startToCloseTimeout: '4 hours',
  // Sessions heartbeat every 250 ms (the apply worker's throttle lets them through every 250 ms), so a
  // cancellation — a pause — reaches the session within about half a second.
  heartbeatTimeout: '10 seconds',
  // A pause cancels the session: wait for it to stop at a batch boundary and return what it applied.
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry,
});
const { prepareReplica, resolveReplica } = proxyActivities<Activities>({ startToCloseTimeout: '2 minutes', retry });

/**
 * What `pgferry up` starts a replica with: everything. Anyone else — the
 * Temporal UI's Start Workflow form, `temporal workflow start`, `pgferry
 * replica start` — may give the name alone, `{"replica": "b"}`: the worker
 * then resolves the source and the tables from its own configuration when
 * the workflow runs (resolveReplica), and again after each continue-as-new,
 * so the input stays one field.
 */
export interface ReplicaInput {
  replica: string;
  source?: string;
  /** Tables the source publishes ("schema.table" pairs), checked on the replica before applying. */
  tables?: { schema: string; table: string }[];
  status?: ReplicaStatus;
  /** Changes applied over the last minute, for rowsPerSecond (carried across continue-as-new). */
  rate?: RateWindow;
}

type ResolvedInput = ReplicaInput & Required<Pick<ReplicaInput, 'source' | 'tables'>>;

/**
 * The input with its source and tables: given, or resolved by the worker
 * from its configuration. A first run that cannot be resolved for good (an
 * unknown replica: the worker's message names the ones it knows) fails the
 * workflow at once; a later run (after continue-as-new) stops in `failed`
 * like any other permanent failure, until resume. A source that is down is
 * retried. Only one-field inputs reach the activity, and no history recorded
 * before this change has one, so those replay unchanged; the patch marks
 * histories that resolved.
 */
async function resolved(input: ReplicaInput, stop: (err: unknown) => Promise<void>): Promise<{ input: ResolvedInput; registered: boolean; description?: string }> {
  if (input.source !== undefined && input.tables !== undefined) return { input: input as ResolvedInput, registered: false };
  patched('resolve-replica');
  for (;;) {
    try {
      const r = await resolveReplica({ replica: input.replica });
      return { input: { ...input, source: r.source, tables: r.tables }, registered: r.searchAttributes, description: r.description };
    } catch (err) {
      if (!isPermanentFailure(err)) throw err;
      if (input.status === undefined) {
        const cause = (err as { cause?: ApplicationFailure }).cause;
        throw ApplicationFailure.nonRetryable(cause?.message ?? String(err), cause?.type ?? 'ConfigError');
      }
      await stop(err);
    }
  }
}

/** Activities (sessions, or batches in runs recorded before sessions) between continue-as-new: keeps each run's history far below Temporal's limits. */
const BATCHES_PER_RUN = 400;

/**
 * One apply session, cancelled when a pause arrives (it then stops at its next
 * batch boundary and returns what it applied); in runs recorded before
 * sessions, one batch, counted as a session of one batch. Null: cancelled
 * before it could return, having applied nothing the checkpoint does not hold.
 */
async function applyOnce(input: ResolvedInput, sessions: boolean, pause: PauseSwitch<ReplicaStatus>): Promise<SessionResult | null> {
  const ref = { replica: input.replica, source: input.source };
  if (!sessions) return { ...(await applyBatch(ref)), batches: 1 };
  const scope = new CancellationScope();
  const session = scope.run(() => applySession(ref));
  let done = false;
  await Promise.race([session.finally(() => (done = true)), condition(() => pause.paused || done)]);
  if (done) return await session;
  scope.cancel();
  try {
    return await session;
  } catch (err) {
    // Once cancelled, Temporal retries no attempt: a transient failure while stopping (a connection
    // reset, a worker lost) ends it too. The replica's checkpoint holds what was committed; the pause
    // stands and a resume starts a new session. A permanent failure still stops the replica.
    if (isCancellation(err) || !isPermanentFailure(err)) return null;
    throw err;
  }
}

/**
 * One replica: pull → apply → checkpoint, forever. The replica's own
 * pgferry.progress row is the truth; this workflow's status mirrors it for
 * display. The apply session in flight (activities: applySession) runs batch
 * after batch for batch.apply_session_seconds; `pause` cancels it, and it stops
 * at its next batch boundary (within about a second) and returns what it
 * applied. `resume` continues, and also retries a replica stopped in state `failed`.
 * The `setPaused` update does the same and answers once it is done (pause-switch.ts).
 */
export async function replicaWorkflow(given: ReplicaInput): Promise<void> {
  const status: ReplicaStatus = given.status
    ? { ...given.status, rowsPerSecond: given.status.rowsPerSecond ?? null }
    : startingReplicaStatus(given.replica, given.source ?? '', new Date().toISOString());
  let rate = given.rate ?? emptyRateWindow();
  // Search attributes (see visibility.ts): the state whenever it changes, with the latest lag in
  // the same event; the lag alone only when it changes bucket, at most every LAG_UPDATE_MIN_MS,
  // so a busy replica adds few events to its history (and a steady or idle one none).
  let lag: number | undefined;
  let lagShownAt = -Infinity;
  const publish = (force = false) => {
    if (!status.source) return; // a one-field input not resolved yet: nothing to show
    const stateChanges = force || shownState() !== status.state;
    const withLag = lag !== undefined && (stateChanges || lagWorthShowing(shownLag(), lag, Date.now() - lagShownAt));
    if (show(status.source, status.state, withLag ? lag : undefined, force)) lagShownAt = Date.now();
  };
  const stopped = () => {
    rate = emptyRateWindow();
    status.rowsPerSecond = 0;
  };
  // Every handler is in place before a one-field input is resolved, so status, pause and resume answer
  // meanwhile (a source down keeps the resolve retrying; status then shows it as retrying).
  setHandler(replicaStatusQuery, () => status);
  // State becomes 'paused' only once the batch in flight has committed: 'paused' means nothing more is applied.
  const pause = new PauseSwitch(status, replicaSetPausedUpdate);
  let showAsked = false;
  setHandler(enableSearchAttributesSignal, (opts) => {
    describeIfUndescribed(opts?.description);
    showAsked = true;
    publish(true);
  });
  const failed = (err: unknown) =>
    stopUntilResumed(status, err, {
      kind: 'replica',
      fields: { replica: given.replica },
      onStop: () => {
        stopped();
        publish();
      },
      waitForResume: () => pause.nextResume(),
    });

  const { input, registered, description } = await resolved(given, failed);
  status.source = input.source;
  // Started by name alone (the UI's form sets no search attributes): show them once the worker said they are registered.
  if (input !== given && (registered || showAsked)) {
    describeIfUndescribed(description);
    publish(true);
  }

  // Runs recorded before apply sessions existed replay with one applyBatch activity per batch.
  const sessions = patched('apply-session');
  let prepared = status.state !== 'starting' && status.state !== 'failed';
  for (let batches = 0; batches < BATCHES_PER_RUN && !workflowInfo().continueAsNewSuggested; ) {
    if (pause.paused) {
      status.state = 'paused';
      status.updatedAt = new Date().toISOString();
      stopped();
      publish();
      await pause.whilePaused();
    }
    if (!prepared) {
      try {
        await prepareReplica({ replica: input.replica, source: input.source, tables: input.tables });
        prepared = true;
      } catch (err) {
        await failed(err);
        continue;
      }
    }
    status.state = pause.paused ? 'paused' : 'running';
    if (pause.paused) continue;
    publish();
    try {
      const startedAt = Date.now();
      const r = await applyOnce(input, sessions, pause);
      batches++;
      if (!r) continue;
      const now = Date.now();
      rate = addBatch(rate, startedAt, now, r.changes);
      Object.assign(status, {
        appliedLsn: r.appliedLsn,
        offset: r.offset,
        lastCommitTime: r.lastCommitTime ?? status.lastCommitTime,
        caughtUp: r.caughtUp,
        txns: status.txns + r.txns,
        changes: status.changes + r.changes,
        batches: status.batches + r.batches,
        lastError: null,
        updatedAt: new Date().toISOString(),
        rowsPerSecond: ratePerSecond(rate, now),
      });
      lag = lagSeconds(r.caughtUp, status.lastCommitTime, now) ?? lag;
      publish();
    } catch (err) {
      await failed(err);
      prepared = false; // after a fix, check the replica's tables again
    }
  }
  await pause.handOver();
  // A one-field input stays one field: the next run resolves the configuration again.
  const next = given.source !== undefined && given.tables !== undefined ? input : { replica: input.replica };
  await makeContinueAsNewFunc<typeof replicaWorkflow>(keepVisibility())({ ...next, status: { ...status, state: pause.paused ? 'paused' : status.state }, rate });
}
