/**
 * The end of a fault whose outcome is a reported state (needs_resync, failed,
 * retrying) before an operator's fix: stop the workload, wait until the
 * replicas equal the source, audit them, record the row with what happened,
 * and assert. (Faults with a plain audit end with FaultWorld.settle, in
 * system.ts.)
 */
import { expect } from 'vitest';
import { waitForEqual } from '../../helpers/fixture';
import type { Workload } from '../../helpers/workload';
import { auditReplicas } from './audit';
import { recordRow } from './rows';
import { REPLICAS, type FaultWorld } from './system';
import { AUDIT_TABLES } from './workload';

/**
 * Stop the workload, wait until `replicas` equal the source, audit them, and
 * record the row with `outcome` (what happened, before the audit; source
 * transactions = the workload's plus `priorTransactions`, those of earlier
 * workloads of the same fault) — then
 * assert 0 lost, 0 duplicated, and no product problem noted in `bugs`.
 */
export async function settleReported(
  f: FaultWorld,
  load: Workload | null,
  o: { n: number; fault: string; t0: number; outcome: string; replicas?: string[]; bugs?: string[]; priorTransactions?: number; timeoutMs?: number },
): Promise<{ lost: number; duplicated: number }> {
  const committed = load ? await load.stop() : null;
  const replicas = o.replicas ?? REPLICAS;
  let converged: string | null = null;
  try {
    await Promise.all(replicas.map((r) => waitForEqual(f.w, r, AUDIT_TABLES, o.timeoutMs ?? 300_000)));
  } catch (err) {
    converged = (err as Error).message.split('\n')[0];
  }
  const convergedSeconds = converged ? null : (Date.now() - o.t0) / 1000;
  const a = await auditReplicas(f.w, replicas);
  const bugs = o.bugs ?? [];
  const outcome = [o.outcome, converged ? `NOT CONVERGED: ${converged}` : `${replicas.join(', ')} equal the source`, `${a.lost} lost / ${a.duplicated} duplicated on ${replicas.join(', ')}`, ...bugs.map((b) => `PRODUCT BUG: ${b}`)].join('; ');
  recordRow({ n: o.n, fault: o.fault, transactions: (o.priorTransactions ?? 0) + (committed ?? 0), lost: a.lost, duplicated: a.duplicated, convergedSeconds, outcome });
  expect(converged, `${o.fault}: convergence`).toBeNull();
  expect({ lost: a.lost, duplicated: a.duplicated }, `${o.fault}: audit of ${replicas.join(', ')} (${JSON.stringify(a.per)})`).toEqual({ lost: 0, duplicated: 0 });
  expect(bugs, `${o.fault}: product problems seen`).toEqual([]);
  return a;
}
