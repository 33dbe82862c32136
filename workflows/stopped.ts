/**
 * What every pgferry workflow (capture, replica, subscriber) does when an
 * activity fails permanently: stop in `failed` — or `needs_resync` when the
 * stream no longer holds what is needed (GapError) — with the reason in
 * `lastError`, and wait for an operator's `resume`. Written once so the three
 * cannot drift apart.
 *
 * Determinism: the order of the hooks is part of the command sequence the
 * released workflows issue (`onStop` and `onResume` may upsert search
 * attributes), so it must not change; recorded histories replay it.
 */
import { log } from '@temporalio/workflow';
import { failureMessage, failureType, isActivityFailure } from './errors';

/** The part of a workflow's status this block writes. */
export interface StoppableStatus {
  state: string;
  lastError: string | null;
  updatedAt: string;
}

export interface StopHooks {
  /** The log line is `<kind> stopped`. */
  kind: 'capture' | 'replica' | 'subscriber';
  /** Names the thing in the log line, e.g. `{ replica: 'a' }`. */
  fields: Record<string, unknown>;
  /** Right after the state is set, before the log line: show it (search attributes), reset the rate… */
  onStop?: () => void;
  /** Waits for the operator's resume (the workflow's own resume switch). */
  waitForResume: () => Promise<void>;
  /** Right after lastError is cleared. */
  onResume?: () => void;
}

/**
 * Stop on `err` until resumed. Anything but an activity failure is a bug: it is
 * re-thrown so the workflow task fails visibly (and is retried) instead.
 */
export async function stopUntilResumed(status: StoppableStatus, err: unknown, hooks: StopHooks): Promise<void> {
  if (!isActivityFailure(err)) throw err;
  status.state = failureType(err) === 'GapError' ? 'needs_resync' : 'failed';
  status.lastError = failureMessage(err);
  status.updatedAt = new Date().toISOString();
  hooks.onStop?.();
  log.error(`${hooks.kind} stopped`, { ...hooks.fields, error: status.lastError });
  await hooks.waitForResume();
  status.lastError = null;
  hooks.onResume?.();
}
