/**
 * Run `fn` until it succeeds, retrying errors that may pass (a server
 * starting or restarting) with exponential backoff for up to `waitMs`, and
 * reporting each retry. Permanent errors are thrown at once.
 */
import { isTransient } from './errors';
import type { Logger } from './logger';

export async function withRetry<T>(fn: () => Promise<T>, waitMs: number, log: Logger): Promise<T> {
  const deadline = Date.now() + waitMs;
  let delay = 500;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isTransient(err) || Date.now() + delay > deadline) throw err;
      log.warn({ attempt, retryInMs: delay }, `${(err as Error).message} (attempt ${attempt}; retrying in ${(delay / 1000).toFixed(1)}s)`);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 8000);
    }
  }
}
