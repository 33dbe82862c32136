import * as fs from 'node:fs';
import { expect } from 'vitest';
import type { Proc } from '../helpers/procs';
import { createWorld, startUp, upArgs, waitForEqual, World } from '../helpers/fixture';
import { AUDIT_SCHEMA, AUDIT_TABLES, Workload } from '../helpers/workload';
import { waitFor } from '../helpers/wait';
import { resultsLog } from './report';

/**
 * The fault suite's world: a source with the audit workload's tables (every
 * source transaction inserts one audit row with a unique id), two replicas a
 * and b, and pgferry split in two processes — capture (`worker --queues
 * capture`) and apply (`up --queues apply`) — so a fault can hit either.
 *
 * A fault test: `const load = f.load(); …inject…; await f.settle(load, …)`.
 * settle stops the workload, waits until both replicas equal the source, and
 * audits them: lost = source transaction ids missing on the replica,
 * duplicated = audit rows on the replica beyond one per id. The result is
 * asserted (0 and 0) and recorded for the suite's table.
 */
export const REPLICAS = ['a', 'b'];
export { AUDIT_TABLES };

export class FaultWorld {
  capture: Proc | null = null;
  apply: Proc | null = null;

  private constructor(readonly w: World) {}

  static async create(opts: { schema?: string; env?: NodeJS.ProcessEnv } = {}): Promise<FaultWorld> {
    const w = await createWorld({ replicas: REPLICAS, schema: AUDIT_SCHEMA + (opts.schema ?? '') });
    Object.assign(w.env, opts.env ?? {});
    return new FaultWorld(w);
  }

  captureArgs(): string[] {
    return ['worker', '--queues', 'capture', '--source', this.w.sourceUrl];
  }

  async startCapture(env: NodeJS.ProcessEnv = {}): Promise<Proc> {
    this.capture = await startUp(this.w, this.captureArgs(), env);
    return this.capture;
  }

  async startApply(env: NodeJS.ProcessEnv = {}): Promise<Proc> {
    this.apply = await startUp(this.w, upArgs(this.w, ['--queues', 'apply']), env);
    return this.apply;
  }

  /** Both processes, apply first (up prepares the source and starts every workflow). */
  async start(env: NodeJS.ProcessEnv = {}): Promise<void> {
    if (!this.apply || this.apply.child.exitCode !== null || this.apply.child.signalCode !== null) await this.startApply(env);
    if (!this.capture || this.capture.child.exitCode !== null || this.capture.child.signalCode !== null) await this.startCapture(env);
  }

  /** A running workload; `sleepMs` between transactions (0: as fast as one connection goes). */
  load(sleepMs = 2, opts: { reconnect?: boolean } = {}): Workload {
    const load = new Workload(this.w.sourceUrl, sleepMs, opts);
    load.start();
    return load;
  }

  /** The workload the infrastructure faults run under: reconnecting, 300 transactions in, both replicas applying. */
  async steadyLoad(): Promise<Workload> {
    const load = this.load(2, { reconnect: true });
    await this.more(load, 300);
    await Promise.all(REPLICAS.map((r) => this.applied(r, 100)));
    return load;
  }

  /** Wait until the workload has committed `more` transactions beyond now. */
  async more(load: Workload, more: number, timeoutMs = 60_000): Promise<void> {
    const target = load.committed + more;
    await waitFor(`${more} more source transactions`, () => load.committed >= target, timeoutMs, 50);
  }

  /** Wait until replica r has applied at least `txns` transactions in all (pgferry.progress). */
  async applied(replica: string, txns: number, timeoutMs = 120_000): Promise<void> {
    await waitFor(`replica ${replica} to apply ${txns} transactions`, async () => {
      const r = await this.w.replicas.withClient(`replica_${replica}`, (c) =>
        c.query(`SELECT coalesce(sum(txns_applied), 0)::bigint AS n FROM pgferry.progress`).catch(() => ({ rows: [{ n: 0 }] })),
      );
      return Number(r.rows[0].n) >= txns;
    }, timeoutMs, 200);
  }

  /**
   * Stop the workload, wait for both replicas to equal the source, audit them,
   * assert nothing lost or duplicated, and record the row for the table.
   */
  async settle(load: Workload | null, result: { n: number; fault: string; t0?: number; replicas?: string[] }, timeoutMs = 300_000): Promise<FaultRow> {
    const transactions = load ? await load.stop() : null;
    const stoppedAt = Date.now();
    const replicas = result.replicas ?? REPLICAS;
    await Promise.all(replicas.map((r) => waitForEqual(this.w, r, AUDIT_TABLES, timeoutMs)));
    const convergedSeconds = (Date.now() - (result.t0 ?? stoppedAt)) / 1000;
    const { lost, duplicated } = await auditReplicas(this.w, replicas);
    const row: FaultRow = { n: result.n, fault: result.fault, transactions, lost, duplicated, convergedSeconds, outcome: lost === 0 && duplicated === 0 ? 'replicas equal the source' : 'AUDIT FAILED' };
    record(row);
    expect({ lost, duplicated }, `${result.fault}: audit of replicas ${replicas.join(', ')}`).toEqual({ lost: 0, duplicated: 0 });
    return row;
  }

  async teardown(): Promise<void> {
    for (const p of [this.capture, this.apply]) await p?.stop();
    await this.w.teardown();
  }
}

export interface FaultRow {
  n: number;
  fault: string;
  transactions: number | null;
  lost: number | null;
  duplicated: number | null;
  /** From the fault (or the end of the load) until both replicas equal the source. */
  convergedSeconds: number | null;
  outcome: string;
}

/** Add a row to the suite's table (for faults whose outcome is a state, not an audit, too). */
export function record(row: FaultRow): void {
  fs.appendFileSync(resultsLog(), `${JSON.stringify(row)}\n`);
}

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
