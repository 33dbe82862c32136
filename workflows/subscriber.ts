/**
 * The workflow of an application subscriber run under Temporal (see
 * subscriberWorkflow below).
 */
import { makeContinueAsNewFunc, proxyActivities, setHandler, workflowInfo } from '@temporalio/workflow';
import type { createSubscriberActivities } from '../activities/subscriber';
import { NON_RETRYABLE } from '../src/errors';
import { SubscriberStatus, subscriberSetPausedUpdate, subscriberStatusQuery } from './messages';
import { PauseSwitch } from './pause-switch';
import { stopUntilResumed } from './stopped';

type Activities = ReturnType<typeof createSubscriberActivities>;

export interface SubscriberInput {
  subscriber: string;
  source: string;
  /** Backoff between attempts of a batch whose handler failed (or whose servers were away). */
  retry: { initialDelayMs: number; maxDelayMs: number };
  status?: SubscriberStatus;
}

const BATCHES_PER_RUN = 400;

/**
 * An application subscriber under Temporal: deliver a batch (an activity on
 * the application's own worker, which holds the handler) → record the
 * progress → again. The handler's retries are the activity's: the activity
 * gives up with HandlerFailedError after the subscriber's maxAttempts, and
 * the workflow then waits in state `failed`, naming the change, until
 * `resume`. `pause` stops after the batch in flight; the `setPaused` update
 * does the same and answers once it is done (pause-switch.ts). The
 * subscriber's row in its positions table is the truth; this status mirrors it.
 */
export async function subscriberWorkflow(input: SubscriberInput): Promise<void> {
  const { deliverSubscriberBatch } = proxyActivities<Activities>({
    taskQueue: workflowInfo().taskQueue,
    startToCloseTimeout: '30 minutes',
    // The activity heartbeats every few seconds, also while a handler runs: a dead worker is noticed in 30 s.
    heartbeatTimeout: '30 seconds',
    retry: {
      initialInterval: input.retry.initialDelayMs,
      backoffCoefficient: 2,
      maximumInterval: input.retry.maxDelayMs,
      nonRetryableErrorTypes: NON_RETRYABLE,
    },
  });
  const status: SubscriberStatus = input.status ?? {
    subscriber: input.subscriber,
    source: input.source,
    state: 'starting',
    lsn: null,
    offset: null,
    lastCommitTime: null,
    caughtUp: false,
    txns: 0,
    changes: 0,
    batches: 0,
    lastError: null,
    updatedAt: new Date().toISOString(),
  };
  setHandler(subscriberStatusQuery, () => status);
  const pause = new PauseSwitch(status, subscriberSetPausedUpdate);
  const set = (patch: Partial<SubscriberStatus>) => Object.assign(status, patch, { updatedAt: new Date().toISOString() });

  for (let batches = 0; batches < BATCHES_PER_RUN && !workflowInfo().continueAsNewSuggested; batches++) {
    if (pause.paused) {
      set({ state: 'paused' });
      await pause.whilePaused();
    }
    set({ state: 'running' });
    try {
      const r = await deliverSubscriberBatch({ subscriber: input.subscriber });
      set({
        lsn: r.position.lsn,
        offset: r.position.offset,
        lastCommitTime: r.lastCommitTime ?? status.lastCommitTime,
        caughtUp: r.caughtUp,
        txns: r.totalTxns,
        changes: r.totalChanges,
        batches: status.batches + 1,
        lastError: null,
      });
    } catch (err) {
      await stopUntilResumed(status, err, {
        kind: 'subscriber',
        fields: { subscriber: input.subscriber },
        waitForResume: () => pause.nextResume(),
        // A subscriber's status also says when it was resumed.
        onResume: () => set({}),
      });
    }
  }
  await pause.handOver();
  await makeContinueAsNewFunc<typeof subscriberWorkflow>()({ ...input, status: { ...status, state: pause.paused ? 'paused' : status.state } });
}
