/**
 * The pause switch of a consumer workflow (replica, subscriber): the `pause`
 * and `resume` signals, and the `setPaused` update, which makes the same
 * change and answers only once the workflow has reached the state asked for.
 *
 * `pause` is honoured between batches; `resume` also releases a consumer
 * stopped in `failed` / `needs_resync`.
 *
 * When the update answers (its result is the status at that moment):
 * - pause: once the workflow is at rest — waiting at the pause point (the
 *   batch in flight has committed: state `paused`), or stopped in `failed` /
 *   `needs_resync`. A pause sent to a stopped consumer therefore answers at
 *   once with that state and changes nothing visible: as with the signal, the
 *   consumer stays stopped, and the next resume clears the pause too and
 *   retries. If a resume cancels the pause first, it answers with the state
 *   the workflow kept (`running`).
 * - resume: once the workflow has left its wait and works again (state
 *   `running`, or `starting`); a replica resumed from `failed` checks its
 *   tables before that, still showing `failed` (lastError cleared). It also
 *   answers when the workflow stops again first (a new failure, or a later
 *   pause), with that state.
 * - both: at continue-as-new, with the state the next run is given.
 *
 * The handlers only read and flip fields and wait on conditions: no commands,
 * so adding them changes nothing in histories recorded without them.
 */
import { ApplicationFailure, allHandlersFinished, condition, setHandler } from '@temporalio/workflow';
import type { UpdateDefinition } from '@temporalio/common';
import { SetPausedRequest, pauseSignal, resumeSignal } from './messages';

/** States in which a consumer applies nothing until it is resumed. */
const AT_REST: readonly string[] = ['paused', 'failed', 'needs_resync'];

type Wait = 'paused' | 'stopped';

export class PauseSwitch<S extends { state: string }> {
  paused: boolean;
  private resumed = false;
  /** The wait the workflow is in (at the pause point, or stopped after a failure); null while it works. */
  private waiting: Wait | null = null;
  /** Waits entered so far: a resume that sees this grow knows the workflow stopped again. */
  private waits = 0;
  /** Set just before continue-as-new: the next run carries the switch, so waiting updates answer now. */
  private handingOver = false;

  constructor(
    private readonly status: S,
    update: UpdateDefinition<S, [SetPausedRequest]>,
  ) {
    this.paused = status.state === 'paused';
    setHandler(pauseSignal, () => this.pause());
    setHandler(resumeSignal, () => this.resume());
    setHandler(
      update,
      async ({ paused }) => {
        await (paused ? this.pauseReached() : this.resumeReached());
        return { ...this.status };
      },
      { validator: validateSetPaused },
    );
  }

  /** Wait while paused. */
  async whilePaused(): Promise<void> {
    await this.wait('paused', () => !this.paused);
  }

  /** Wait for the next `resume` (a stopped consumer waits for its operator). */
  async nextResume(): Promise<void> {
    this.resumed = false;
    await this.wait('stopped', () => this.resumed);
  }

  /**
   * Call right before continue-as-new: updates still waiting answer now, with
   * `paused` if a pause is pending (the next run starts paused), and the run
   * ends only once they have (an update left unfinished would fail for its caller).
   */
  async handOver(): Promise<void> {
    if (this.paused) (this.status as { state: string }).state = 'paused';
    this.handingOver = true;
    await condition(allHandlersFinished);
  }

  private pause(): void {
    this.paused = true;
  }

  private resume(): void {
    this.paused = false;
    this.resumed = true;
  }

  private async wait(kind: Wait, until: () => boolean): Promise<void> {
    this.waiting = kind;
    this.waits += 1;
    try {
      await condition(until);
    } finally {
      this.waiting = null;
    }
  }

  private async pauseReached(): Promise<void> {
    this.pause();
    await condition(() => this.handingOver || this.waiting !== null || !this.paused);
  }

  private async resumeReached(): Promise<void> {
    const waitsBefore = this.waits;
    this.resume();
    await condition(() => this.handingOver || this.paused || this.waits > waitsBefore || (this.waiting === null && !AT_REST.includes(this.status.state)));
  }
}

/** Runs before the update is accepted: a rejected request leaves no trace in the history. */
function validateSetPaused(request: SetPausedRequest): void {
  if (typeof request?.paused !== 'boolean') {
    throw ApplicationFailure.nonRetryable('setPaused takes {"paused": true} (pause) or {"paused": false} (resume)', 'InvalidRequest');
  }
}
