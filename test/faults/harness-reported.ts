import { expect } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import { cli, waitForEqual } from '../helpers/fixture';
import { runCli } from '../helpers/procs';
import { waitFor } from '../helpers/wait';
import type { Workload } from '../helpers/workload';
import { AUDIT_TABLES, auditIds, auditReplicas, FaultRow, FaultWorld, record, REPLICAS } from './harness';

/**
 * Helpers for the faults whose outcome is a reported state (needs_resync,
 * failed, retrying) before an operator's fix: read what the CLI reports,
 * wait for a state with a deadline, check that a stopped replica holds a
 * gap-free prefix of the source (nothing silently skipped), and settle with
 * an audit whose row states what happened.
 */

export interface Reported {
  /** Exit code of the CLI command. */
  code: number | null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  v: any;
}

/** `pgferry replica status <name> --json`. */
export async function replicaStatus(f: FaultWorld, name: string): Promise<Reported> {
  const r = await cli(f.w, ['replica', 'status', name, '--json']);
  return { code: r.code, v: parseJson(r.stdout, r.stderr) };
}

/** `pgferry status --json` (with the source URL, so the slot is shown too). */
export async function systemStatus(f: FaultWorld): Promise<Reported> {
  const r = await runCli(['status', '--json'], { ...f.w.env, PGFERRY_SOURCE: f.w.sourceUrl });
  return { code: r.code, v: parseJson(r.stdout, r.stderr) };
}

/** `pgferry capture status --json`. */
export async function captureStatus(f: FaultWorld): Promise<Reported> {
  const r = await cli(f.w, ['capture', 'status', '--json']);
  return { code: r.code, v: parseJson(r.stdout, r.stderr) };
}

function parseJson(stdout: string, stderr: string): unknown {
  try {
    return JSON.parse(stdout);
  } catch {
    return { unparsable: stdout, stderr };
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

/** The source's audit rows (id → n). */
export async function sourceAudit(f: FaultWorld): Promise<Map<string, number>> {
  const rows = await f.w.source.withClient('app', (c) => c.query('SELECT txn_id::text AS id, n FROM audit'));
  return new Map(rows.rows.map((r) => [r.id as string, Number(r.n)]));
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

/** Lost and duplicated transactions on each replica, against the source's audit table. */
export const audit = (f: FaultWorld, replicas: string[]) => auditReplicas(f.w, replicas);

/**
 * `record` (the suite's table), and the row on this run's output too: the
 * table's log is shared by every fault run on the machine.
 */
export function recordRow(row: FaultRow): void {
  record(row);
  console.log(`fault row: ${JSON.stringify(row)}`);
}

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
  const a = await audit(f, replicas);
  const bugs = o.bugs ?? [];
  const outcome = [o.outcome, converged ? `NOT CONVERGED: ${converged}` : `${replicas.join(', ')} equal the source`, `${a.lost} lost / ${a.duplicated} duplicated on ${replicas.join(', ')}`, ...bugs.map((b) => `PRODUCT BUG: ${b}`)].join('; ');
  recordRow({ n: o.n, fault: o.fault, transactions: (o.priorTransactions ?? 0) + (committed ?? 0), lost: a.lost, duplicated: a.duplicated, convergedSeconds, outcome });
  expect(converged, `${o.fault}: convergence`).toBeNull();
  expect({ lost: a.lost, duplicated: a.duplicated }, `${o.fault}: audit of ${replicas.join(', ')} (${JSON.stringify(a.per)})`).toEqual({ lost: 0, duplicated: 0 });
  expect(bugs, `${o.fault}: product problems seen`).toEqual([]);
  return a;
}

/** A row for a fault that could not be produced here, with the reason. */
export function recordNotProduced(n: number, fault: string, why: string): void {
  recordRow({ n, fault, transactions: null, lost: null, duplicated: null, convergedSeconds: null, outcome: `NOT PRODUCED: ${why}` });
}

/** One line, at most `max` characters: for outcomes quoting an error. */
export function short(s: string | null | undefined, max = 160): string {
  const one = String(s ?? '').replace(/\s+/g, ' ').trim();
  return one.length > max ? `${one.slice(0, max - 1)}…` : one;
}

/** A Temporal client on the world's dev server (what an operator's Temporal UI does: signals, describe). */
export async function withTemporal<T>(f: FaultWorld, fn: (c: Client) => Promise<T>): Promise<T> {
  const connection = await Connection.connect({ address: f.w.temporal.address });
  try {
    return await fn(new Client({ connection }));
  } finally {
    await connection.close();
  }
}

/** `replica resync <name>` with the world's source and that replica's URL. */
export async function resync(f: FaultWorld, name: string, url = f.w.replicaUrls[name]) {
  return runCli(['replica', 'resync', name, '--source', f.w.sourceUrl, '--replica', `${name}=${url}`], f.w.env, 600_000);
}
