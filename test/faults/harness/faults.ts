/**
 * Faults the tests inject through the harness: a test-only crash point armed
 * in a pgferry process (and the check that it died there), and the Temporal
 * dev server killed and restarted in place. (RabbitMQ is stopped through
 * PrivateRabbit, in system.ts; processes are killed with Proc.kill9 and
 * clusters stopped through PgCluster, in test/helpers.)
 */
import { expect } from 'vitest';
import { CRASH_ENV } from '../../../src/testing/crash-point';
import { startDevServer } from '../../../src/temporal/dev-server';
import { logger } from '../../../src/logger';
import type { World } from '../../helpers/fixture';
import type { Proc } from '../../helpers/procs';

/** The environment that arms a test-only crash point (src/testing/crash-point.ts): `point` or `point:N` (the N-th hit). */
export function crashEnv(point: string, nth?: number): NodeJS.ProcessEnv {
  return { [CRASH_ENV]: nth ? `${point}:${nth}` : point };
}

/**
 * Wait until `proc` dies by itself at crash point `point` (it prints one line,
 * then SIGKILLs itself), and check that it did: killed by SIGKILL, the line in
 * its output. Returns when it is gone.
 */
export async function crashedAt(proc: Proc, point: string, timeoutMs = 180_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const dead = await Promise.race([
    proc.exited.then(() => true),
    new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
  ]);
  clearTimeout(timer);
  if (!dead) throw new Error(`timed out after ${timeoutMs / 1000}s waiting for the process to crash at '${point}'; its output:\n${proc.output().slice(-4000)}`);
  expect(proc.child.signalCode, `the process should have SIGKILLed itself at '${point}'; output:\n${proc.output().slice(-4000)}`).toBe('SIGKILL');
  expect(proc.output()).toContain(`test crash point '${point}' reached`);
}

/**
 * SIGKILL the world's Temporal dev server, run `whileDown` (the test's measure
 * of how long it stays dead), then start it again on the same port, UI port
 * and SQLite file. `w.temporal` is updated in place (its teardown stops the
 * new process).
 */
export async function restartTemporal(w: World, whileDown: () => Promise<void> = async () => undefined): Promise<{ downMs: number }> {
  const t = w.temporal;
  const port = Number(t.address.split(':').pop());
  const old = t.process;
  if (old.exitCode === null && old.signalCode === null) {
    const exited = new Promise((r) => old.once('exit', r));
    old.kill('SIGKILL');
    await exited;
  }
  const downAt = Date.now();
  await whileDown();
  // The port was just released by a killed process; the dev server exits at once if it cannot bind
  // (or if its HTTP API / metrics port, chosen at random, collides): try again a few times.
  let lastErr: unknown;
  for (let attempt = 1; attempt <= 5; attempt++) {
    try {
      const server = await startDevServer({ dataDir: t.dataDir, port, uiPort: t.uiPort, log: logger.child({ test: true }), timeoutMs: 120_000 });
      Object.assign(t, { process: server.process, stop: server.stop, uiUrl: server.uiUrl });
      return { downMs: Date.now() - downAt };
    } catch (err) {
      lastErr = err;
      if (!/exited/.test((err as Error).message)) throw err;
      await new Promise((r) => setTimeout(r, 1000 * attempt)); // back off before the next attempt
    }
  }
  throw lastErr;
}
