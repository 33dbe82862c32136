/**
 * Wait until `check` returns a truthy value, polling, or fail after `timeoutMs`
 * with `reason` and the last value/error seen. Tests never sleep-then-assert.
 */
export async function waitFor<T>(reason: string, check: () => Promise<T> | T, timeoutMs = 60_000, intervalMs = 250): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
      last = v;
    } catch (err) {
      if ((err as Error)?.constructor?.name === 'StopWaiting') throw err;
      last = err;
    }
    if (Date.now() > deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${reason} (last: ${detail})`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
