/**
 * TEST-ONLY crash points for the fault suite (test/faults, issue 8): kill -9
 * of a worker at an exact place of the data path, which a signal sent from
 * outside can only hit by luck.
 *
 * Inert unless the environment variable PGFERRY_TEST_CRASH_AT names a point
 * (read once, when this module loads): `PGFERRY_TEST_CRASH_AT=<name>` kills
 * the process at the first hit of that point, `<name>:<N>` at the N-th. The
 * process writes one line to stderr and sends itself SIGKILL: no finally
 * block, exit handler or shutdown hook runs, exactly as with `kill -9`.
 * Without the variable a crash point is one string comparison.
 *
 * The points:
 * - `capture-before-confirm` (src/capture/wal/stream-changes.ts): a change-log
 *   message was just handed to RabbitMQ, its publisher confirm not yet seen;
 *   the slot was never acknowledged past it.
 * - `capture-after-confirm` (src/capture/wal/stream-changes.ts): RabbitMQ confirmed
 *   a message; the slot acknowledgement that the confirm allows is not sent.
 * - `apply-after-commit` (src/apply/apply-batch.ts): an apply batch that applied
 *   transactions has COMMITted on the replica (data and pgferry.progress), and
 *   the apply session (activity applySession) has not returned to Temporal.
 */
import * as fs from 'node:fs';

export const CRASH_ENV = 'PGFERRY_TEST_CRASH_AT';

const spec = parse(process.env[CRASH_ENV]);
let hits = 0;

function parse(v: string | undefined): { name: string; nth: number } | null {
  if (!v) return null;
  const m = /^(.+?)(?::(\d+))?$/.exec(v.trim());
  if (!m) return null;
  return { name: m[1], nth: m[2] ? Math.max(1, Number(m[2])) : 1 };
}

export function crashPoint(name: string): void {
  if (spec === null || spec.name !== name) return;
  hits += 1;
  if (hits < spec.nth) return;
  try {
    fs.writeSync(2, `pgferry: test crash point '${name}' reached (hit ${hits}): killing this process with SIGKILL (${CRASH_ENV})\n`);
  } catch {
    /* stderr closed: crash all the same */
  }
  process.kill(process.pid, 'SIGKILL');
}
