/** Reading an activity's failure inside a workflow: its message for operators, its error type. */
import { ActivityFailure, ApplicationFailure } from '@temporalio/workflow';

/** The operator-facing message of a failed activity. */
export function failureMessage(err: unknown): string {
  if (err instanceof ActivityFailure && err.cause instanceof ApplicationFailure) return err.cause.message;
  if (err instanceof ActivityFailure && err.cause) return err.cause.message;
  return err instanceof Error ? err.message : String(err);
}

/** Only activity failures are handled by the workflows; anything else is a bug and must fail the workflow task visibly. */
export function isActivityFailure(err: unknown): err is ActivityFailure {
  return err instanceof ActivityFailure;
}

/** The error class name an activity reported (ApplicationFailure type), e.g. 'GapError'. */
export function failureType(err: unknown): string | undefined {
  if (err instanceof ActivityFailure && err.cause instanceof ApplicationFailure) return err.cause.type ?? undefined;
  return undefined;
}

/** An activity failure marked non-retryable (a permanent error of src/errors.ts). */
export function isPermanentFailure(err: unknown): boolean {
  return err instanceof ActivityFailure && err.cause instanceof ApplicationFailure && err.cause.nonRetryable === true;
}
