/**
 * The audit of a fault: lost (source transactions missing on a replica) and
 * duplicated (audit rows beyond one per transaction) transactions, per
 * replica and in all; and, for a replica stopped by a fault, that it holds a
 * gap-free prefix of the source's transactions (nothing silently skipped).
 * Content equality of whole tables is waitForEqual (test/helpers/fixture.ts).
 */
import type { World } from '../../helpers/fixture';
import type { FaultWorld } from './system';
import { sourceAudit } from './workload';

/** Lost (source ids missing on the replica) and duplicated (rows beyond one per id) transactions, per replica and in all. */
export async function auditReplicas(w: World, replicas: string[]): Promise<{ lost: number; duplicated: number; per: Record<string, { lost: number; duplicated: number }> }> {
  const src = new Set(await auditIds(w, null));
  const per: Record<string, { lost: number; duplicated: number }> = {};
  let lost = 0;
  let duplicated = 0;
  for (const r of replicas) {
    const dst = await auditIds(w, r);
    const seen = new Set(dst);
    per[r] = { lost: [...src].filter((id) => !seen.has(id)).length, duplicated: dst.length - seen.size };
    lost += per[r].lost;
    duplicated += per[r].duplicated;
  }
  return { lost, duplicated, per };
}

/** Every audit id of the source (replica null) or of a replica, duplicates kept. */
export async function auditIds(w: World, replica: string | null): Promise<string[]> {
  const q = (c: import('pg').Client) => c.query('SELECT txn_id::text AS id FROM audit').then((r) => r.rows.map((x) => x.id as string));
  return replica === null ? w.source.withClient('app', q) : w.replicas.withClient(`replica_${replica}`, q);
}

/**
 * Nothing silently skipped: of the transactions one workload committed (the
 * source's audit rows not in `before`; its n counts 1, 2, … in commit order),
 * a replica stopped by a fault must hold exactly the first k — no hole below
 * the last one it has, none twice, none that the source does not have.
 */
export async function checkPrefix(f: FaultWorld, replica: string, before: Set<string>): Promise<{ held: number; committed: number; holes: number; foreign: number; duplicated: number }> {
  const src = await sourceAudit(f);
  const dst = await auditIds(f.w, replica);
  const seen = new Set(dst);
  const ns: number[] = [];
  let foreign = 0;
  for (const id of seen) {
    if (before.has(id)) continue;
    const n = src.get(id);
    if (n === undefined) foreign += 1;
    else ns.push(n);
  }
  const committed = [...src.keys()].filter((id) => !before.has(id)).length;
  const max = ns.length ? Math.max(...ns) : 0;
  return { held: ns.length, committed, holes: max - ns.length, foreign, duplicated: dst.length - seen.size };
}
