/**
 * The activity of subscriberWorkflow, registered by the application's own
 * worker (runSubscriberWorker), which holds the handlers: the workflow input
 * only names the subscriber. One batch = one delivery session of up to a few
 * seconds; the handler's retries are this activity's attempts.
 */
import { ApplicationFailure, Context, log } from '@temporalio/activity';
import { HandlerFailedError, classifyError } from '../src/errors';
import { Heartbeat } from '../src/heartbeat';
import type { SharedRabbit } from '../src/changelog/rabbit';
import { runSession, SessionResult } from '../src/subscribe/deliver';
import { ensurePosition, Prepared, SubscriberFrom } from '../src/subscribe/subscribe';

export interface SubscriberDeps {
  subscribers: Map<string, { prepared: Prepared; from: SubscriberFrom | undefined; maxAttempts: number }>;
  rabbit: SharedRabbit;
  batch: { maxTxns: number; maxWaitMs: number };
}

export const createSubscriberActivities = (deps: SubscriberDeps) => {
  const started = new Set<string>();
  return {
    /** A subscriber workflow started by name alone (the Temporal UI, temporal workflow start): its source and retry spacing, from this worker. */
    async describeSubscriber({ subscriber }: { subscriber: string }): Promise<{ source: string; retry: { initialDelayMs: number; maxDelayMs: number } }> {
      const entry = deps.subscribers.get(subscriber);
      if (!entry) {
        // Each subscriber has its own task queue, so the worker polling it defines it, unless it was started on another's queue.
        throw ApplicationFailure.nonRetryable(
          `subscriber '${subscriber}' is not defined by the worker of task queue ${Context.current().info.taskQueue} (it defines ${[...deps.subscribers.keys()].map((n) => `'${n}'`).join(', ') || 'none'}); ` +
            `start it on the task queue pgferry-subscriber-${subscriber}, which the application's worker that defines it polls`,
          'UnknownSubscriber',
        );
      }
      const { retry } = entry.prepared.base;
      return { source: entry.prepared.source, retry: { initialDelayMs: retry.initialDelayMs, maxDelayMs: retry.maxDelayMs } };
    },

    async deliverSubscriberBatch({ subscriber }: { subscriber: string }): Promise<SessionResult> {
      const ctx = Context.current();
      const entry = deps.subscribers.get(subscriber);
      if (!entry) {
        // Another worker's subscriber on this task queue: let the worker that knows it take the retry.
        throw ApplicationFailure.retryable(`subscriber '${subscriber}' is not defined in this worker (it defines ${[...deps.subscribers.keys()].join(', ')}); run the worker that defines it`, 'UnknownSubscriber');
      }
      const { prepared, from, maxAttempts } = entry;
      const beat = new Heartbeat(() => ctx.heartbeat(), { everyMs: 5000, minGapMs: 1000 }).start();
      try {
        const rabbit = await deps.rabbit.get();
        if (!started.has(subscriber)) {
          await ensurePosition(prepared, rabbit, from);
          started.add(subscriber);
        }
        return await runSession({
          ...prepared.base,
          // One call per attempt: Temporal's retry policy spaces the attempts, and the workflow's history shows each.
          retry: { ...prepared.base.retry, maxAttempts: 1 },
          rabbit,
          signal: ctx.cancellationSignal,
          maxTxns: deps.batch.maxTxns,
          maxWaitMs: deps.batch.maxWaitMs,
          heartbeat: () => beat.beat(),
        });
      } catch (err) {
        const message = prepared.describe(err);
        if (err instanceof HandlerFailedError) {
          const attempt = ctx.info.attempt;
          if (attempt >= maxAttempts) {
            throw ApplicationFailure.nonRetryable(message.replace(/failed once on/, `failed ${attempt} times on`), 'HandlerFailedError');
          }
          log.warn('handler failed; retrying', { subscriber, attempt, maxAttempts, error: message });
          throw ApplicationFailure.retryable(message, 'HandlerRetry');
        }
        if (classifyError(err) === 'permanent') throw ApplicationFailure.nonRetryable(message, (err as Error).name);
        log.warn('subscriber batch failed; retrying', { subscriber, error: message });
        throw ApplicationFailure.retryable(message, err instanceof Error ? err.name : 'Error');
      } finally {
        beat.stop();
      }
    },
  };
};
