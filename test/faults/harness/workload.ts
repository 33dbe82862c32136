/**
 * The workload of a fault and its oracle: the tables the audit workload
 * writes (every source transaction inserts one audit row with a unique id and
 * its number n, 1, 2, … in commit order), workloads started so that an
 * afterEach stops them even when a test failed, and what the source holds:
 * the truth every replica is audited against. (FaultWorld.load, steadyLoad
 * and more, in system.ts, start a workload and wait on it.)
 */
import type { Workload } from '../../helpers/workload';
import type { FaultWorld } from './system';

export { AUDIT_TABLES } from '../../helpers/workload';

const running = new Set<Workload>();

/**
 * f.load(), remembered so that `afterEach(stopLoads)` stops it even when the
 * test failed before settle: a workload left running would go on writing into
 * the next test of the file (and into a source being torn down).
 */
export function startLoad(f: FaultWorld, sleepMs = 2, opts: { reconnect?: boolean } = {}): Workload {
  const load = f.load(sleepMs, opts);
  running.add(load);
  return load;
}

export async function stopLoads(): Promise<void> {
  for (const load of running) await load.stop().catch(() => undefined);
  running.clear();
}

/** The source's audit rows (id → n). */
export async function sourceAudit(f: FaultWorld): Promise<Map<string, number>> {
  const rows = await f.w.source.withClient('app', (c) => c.query('SELECT txn_id::text AS id, n FROM audit'));
  return new Map(rows.rows.map((r) => [r.id as string, Number(r.n)]));
}
