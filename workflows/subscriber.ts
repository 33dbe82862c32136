/**
 * The workflow of an application subscriber run under Temporal (see
 * subscriberWorkflow below).
 */
import { ApplicationFailure, makeContinueAsNewFunc, patched, proxyActivities, setHandler, workflowInfo } from '@temporalio/workflow';
import type { createSubscriberActivities } from '../activities/subscriber';
import { NON_RETRYABLE } from '../src/errors';
import { SubscriberStatus, startingSubscriberStatus, subscriberSetPausedUpdate, subscriberStatusQuery } from './messages';
import { PauseSwitch } from './pause-switch';
import { stopUntilResumed } from './stopped';
import { isPermanentFailure } from './errors';

type Activities = ReturnType<typeof createSubscriberActivities>;

/**
 * What runSubscriberWorker starts a subscriber with. Started by anyone else
 * (the Temporal UI, `temporal workflow start` on the task queue
 * pgferry-subscriber-<name>), `{"subscriber": "<name>"}` is enough: the
 * application's worker tells the source and the retry spacing
 * (describeSubscriber).
 */
export interface SubscriberInput {
  subscriber: string;
  source?: string;
  /** Backoff between attempts of a batch whose handler failed (or whose servers were away). */
  retry?: { initialDelayMs: number; maxDelayMs: number };
  status?: SubscriberStatus;
}

type ResolvedInput = SubscriberInput & Required<Pick<SubscriberInput, 'source' | 'retry'>>;

/** The input with its source and retry spacing; no history recorded before this change lacks them, so those replay unchanged. */
async function resolved(input: SubscriberInput): Promise<ResolvedInput> {
  if (input.source !== undefined && input.retry !== undefined) return input as ResolvedInput;
  patched('resolve-subscriber');
  const { describeSubscriber } = proxyActivities<Activities>({
    taskQueue: workflowInfo().taskQueue,
    startToCloseTimeout: '1 minute',
    retry: { initialInterval: '1 second', maximumInterval: '30 seconds', nonRetryableErrorTypes: NON_RETRYABLE },
  });
  try {
    return { ...input, ...(await describeSubscriber({ subscriber: input.subscriber })) };
  } catch (err) {
    if (!isPermanentFailure(err)) throw err;
    const cause = (err as { cause?: ApplicationFailure }).cause;
    throw ApplicationFailure.nonRetryable(cause?.message ?? String(err), cause?.type ?? 'UnknownSubscriber');
  }
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
export async function subscriberWorkflow(given: SubscriberInput): Promise<void> {
  const status: SubscriberStatus = given.status ?? startingSubscriberStatus(given.subscriber, given.source ?? '', new Date().toISOString());
  setHandler(subscriberStatusQuery, () => status);
  const pause = new PauseSwitch(status, subscriberSetPausedUpdate);
  const set = (patch: Partial<SubscriberStatus>) => Object.assign(status, patch, { updatedAt: new Date().toISOString() });
  // Status, pause and resume answer while a one-field input is resolved too (handlers issue no commands).
  const input = await resolved(given);
  status.source = input.source;
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
  const next = given.source !== undefined && given.retry !== undefined ? input : { subscriber: input.subscriber };
  await makeContinueAsNewFunc<typeof subscriberWorkflow>()({ ...next, status: { ...status, state: pause.paused ? 'paused' : status.state } });
}
