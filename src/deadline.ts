/**
 * Bounded waits: a promise raced against a timer. The work itself is not
 * stopped; callers that own a resource the work may still produce (a
 * channel, a connection) release it when the deadline passes.
 */

/** Resolve as `p` does, or reject with `onTimeout()` after `ms`. */
export function within<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), Math.max(0, ms));
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Check every `everyMs` until `check()` is true (→ true) or `ms` have passed (→ false). */
export async function waitUntil(ms: number, everyMs: number, check: () => Promise<boolean>): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
