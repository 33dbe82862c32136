import { condition, setHandler } from '@temporalio/workflow';
import { pauseSignal, resumeSignal } from './messages';

/**
 * The `pause` and `resume` signals of a consumer workflow (replica,
 * subscriber). `pause` is honoured between batches; `resume` also releases a
 * consumer stopped in `failed` / `needs_resync`.
 */
export class PauseSwitch {
  paused: boolean;
  private resumed = false;

  constructor(initiallyPaused: boolean) {
    this.paused = initiallyPaused;
    setHandler(pauseSignal, () => {
      this.paused = true;
    });
    setHandler(resumeSignal, () => {
      this.paused = false;
      this.resumed = true;
    });
  }

  /** Wait while paused. */
  async whilePaused(): Promise<void> {
    await condition(() => !this.paused);
  }

  /** Wait for the next `resume` (a stopped consumer waits for its operator). */
  async nextResume(): Promise<void> {
    this.resumed = false;
    await condition(() => this.resumed);
  }
}
