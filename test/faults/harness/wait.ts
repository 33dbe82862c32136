/**
 * Waiting for a condition after a fault: a probe that answers "did this
 * happen within …" with false instead of an error, and waits for what
 * pgferry reports (a replica's state; replicas a and b running again). The
 * general waitFor is in test/helpers/wait.ts; FaultWorld.more and applied
 * (system.ts) wait on the workload and on a replica's progress.
 */
import { cli } from '../../helpers/fixture';
import { waitFor } from '../../helpers/wait';
import { replicaStatus, Reported } from './operator';
import { REPLICAS, type FaultWorld } from './system';

/**
 * Poll `check` until it returns something truthy or `timeoutMs` passes; then
 * false, not an error (for "did this happen within …" probes). An error of the
 * last try is thrown, so a broken probe never reads as "did not happen".
 */
export async function within<T>(check: () => Promise<T> | T, timeoutMs: number, intervalMs = 200): Promise<NonNullable<T> | false> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let error: unknown = null;
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      error = err;
    }
    if (Date.now() > deadline) {
      if (error) throw error;
      return false;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Wait until `replica status <name>` reports one of `states`; returns what it reported. */
export async function waitReplicaState(f: FaultWorld, name: string, states: string[], timeoutMs = 120_000): Promise<Reported> {
  let last = '';
  try {
    return await waitFor(`replica '${name}' to report ${states.join(' or ')}`, async () => {
      const s = await replicaStatus(f, name);
      last = `${s.v?.state} ${s.v?.lastError ?? s.v?.retrying ?? ''}`;
      return states.includes(s.v?.state) ? s : null;
    }, timeoutMs, 500);
  } catch (err) {
    throw new Error(`${(err as Error).message}; last reported: ${last}`);
  }
}

/** After an infrastructure fault: wait until `pgferry status --json` shows replicas a and b running (and, if asked, no longer retrying anything). */
export async function waitForReplicasRunning(f: FaultWorld, opts: { settled?: boolean } = {}) {
  return waitFor(
    'pgferry status --json to show replicas a and b running',
    async () => {
      const r = await cli(f.w, ['status', '--json']);
      const s = JSON.parse(r.stdout) as { replicas: { replica: string; state: string; retrying: string | null }[] };
      const mine = REPLICAS.map((n) => s.replicas.find((x) => x.replica === n));
      return mine.every((x) => x?.state === 'running' && (!opts.settled || !x.retrying)) ? s : null;
    },
    120_000,
    1000,
  );
}
