/**
 * The capture workflow: one per source, supervising the activity that reads
 * its changes (see captureWorkflow below).
 */
import { condition, makeContinueAsNewFunc, patched, proxyActivities, setHandler, workflowInfo } from '@temporalio/workflow';
import type { createActivities } from '../activities';
import { NON_RETRYABLE } from '../src/errors';
import { CaptureStatus, captureStatusQuery, enableSearchAttributesSignal, resumeSignal } from './messages';
import { describeIfUndescribed, keepVisibility, show } from './visibility';
import { stopUntilResumed } from './stopped';

type Activities = ReturnType<typeof createActivities>;

const { streamChanges } = proxyActivities<Activities>({
  startToCloseTimeout: '1 hour',
  // A dead capture worker is noticed within this time and the activity retried elsewhere.
  heartbeatTimeout: '20 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', nonRetryableErrorTypes: NON_RETRYABLE },
});

export interface CaptureInput {
  source: string;
  status?: CaptureStatus;
}

/**
 * Supervises a source's capture: runs the long-lived streamChanges activity
 * (which returns every few minutes so history stays small), and stops in
 * state `failed` on a problem only an operator can fix, until `resume`.
 */
export async function captureWorkflow(input: CaptureInput): Promise<void> {
  const status: CaptureStatus = input.status ?? {
    source: input.source,
    state: 'running',
    confirmedLsn: null,
    lastCommitTime: null,
    txns: 0,
    changes: 0,
    runs: 0,
    lastError: null,
    updatedAt: new Date().toISOString(),
  };
  let retry = false;
  setHandler(captureStatusQuery, () => status);
  setHandler(resumeSignal, () => {
    retry = true;
  });
  // Search attributes PgferryState/PgferrySource, upserted only when the state changes (see visibility.ts).
  setHandler(enableSearchAttributesSignal, (opts) => {
    describeIfUndescribed(opts?.description);
    show(input.source, status.state, undefined, true);
  });

  for (let runs = 0; runs < 50 && !workflowInfo().continueAsNewSuggested; runs++) {
    // A resume counts from the start of this run: one that arrives with (or just before) a failure
    // releases it. (It used to be cleared at the failure, so a resume in the same activation was lost.)
    const keepResume = patched('resume-kept-at-failure');
    if (keepResume) retry = false;
    try {
      const p = await streamChanges({ source: input.source });
      Object.assign(status, {
        state: 'running',
        confirmedLsn: p.confirmedLsn,
        lastCommitTime: p.lastCommitTime ?? status.lastCommitTime,
        txns: status.txns + p.txns,
        changes: status.changes + p.changes,
        runs: status.runs + 1,
        lastError: null,
        updatedAt: new Date().toISOString(),
      });
    } catch (err) {
      await stopUntilResumed(status, err, {
        kind: 'capture',
        fields: { source: input.source },
        onStop: () => {
          show(input.source, status.state);
        },
        waitForResume: async () => {
          if (!keepResume) retry = false;
          await condition(() => retry);
        },
        onResume: () => {
          status.state = 'running';
          show(input.source, status.state);
        },
      });
    }
  }
  await makeContinueAsNewFunc<typeof captureWorkflow>(keepVisibility())({ source: input.source, status });
}
