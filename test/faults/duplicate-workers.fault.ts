import * as fs from 'node:fs';
import { Client, Connection } from '@temporalio/client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { replicaWorkflowId } from '../../src/names';
import { pendingActivity, withLiveSession } from '../../src/temporal/inspect';
import { replicaStatusQuery } from '../../workflows/messages';
import { startUp, upArgs } from '../helpers/fixture';
import type { Proc } from '../helpers/procs';
import { startTemporal } from '../helpers/temporal';
import { waitFor } from '../helpers/wait';
import { Backend, replicaBackends, tcpPortsOf } from './harness/inspect';
import { FaultWorld, REPLICAS } from './harness/system';
import { within } from './harness/wait';
import { startLoad, stopLoads } from './harness/workload';

/**
 * Fault 15: two workers running at once for the same replica (a deployment
 * mistake), in two forms:
 *
 * 1. Same Temporal: a second `up --queues apply` and an extra
 *    `worker --queues apply` poll the apply queue next to the first. Then one
 *    apply process is frozen (SIGSTOP) in the middle of a batch, holding the
 *    replica's progress row; Temporal times the batch out and runs it again on
 *    another worker, which waits on that row; the frozen one is thawed
 *    (SIGCONT) and finishes its stale batch: two attempts of the same batch on
 *    the same replica at once.
 * 2. Two deployments: a second, independent Temporal with its own
 *    `up --queues apply`, i.e. a second replica workflow per replica applying
 *    to the same replica databases concurrently with the first.
 *
 * In both, the replica's progress row (locked for the length of each apply
 * transaction, compared by commit position) must keep every source
 * transaction applied exactly once.
 */
describe('fault 15: two workers at once for the same replica', () => {
  let f: FaultWorld;
  const extra: Proc[] = [];
  let other: Awaited<ReturnType<typeof startTemporal>> | null = null;

  beforeAll(async () => {
    f = await FaultWorld.create();
    await f.start();
  });

  afterEach(stopLoads);

  afterAll(async () => {
    for (const p of extra) {
      if (p.child.signalCode === null && p.child.exitCode === null) p.child.kill('SIGCONT');
      await p.stop();
    }
    await other?.stop().catch(() => undefined);
    if (other) fs.rmSync(other.dataDir, { recursive: true, force: true });
    await f?.teardown();
  });

  it('fault 15: extra apply workers on the same Temporal, one frozen mid-batch and thawed: no duplicates', async () => {
    extra.push(await startUp(f.w, upArgs(f.w, ['--queues', 'apply'])));
    extra.push(await startUp(f.w, ['worker', '--queues', 'apply', '--source', f.w.sourceUrl, ...Object.entries(f.w.replicaUrls).flatMap(([n, u]) => ['--replica', `${n}=${u}`])]));
    const load = startLoad(f);
    await f.more(load, 300);

    // Freeze apply processes in turn until one is caught inside a batch: its backend holds the replica's progress row.
    const candidates = [f.apply!, ...extra];
    // Batches come and go (a caught-up one lasts a fraction of a second): try for up to 3 minutes.
    let caught: { proc: Proc; replica: string; stale: Backend; waiter: Backend } | null = null;
    const until = Date.now() + 180_000;
    for (let round = 0; Date.now() < until && !caught; round++) {
      const proc = candidates[round % candidates.length];
      const t0 = Date.now();
      proc.child.kill('SIGSTOP');
      try {
        const ports = tcpPortsOf(proc.child.pid!);
        const stale = await within(async () => {
          for (const r of REPLICAS) {
            const b = (await replicaBackends(f.w, r)).find((x) => x.clientPort !== null && ports.has(x.clientPort) && x.holdsProgress && x.state === 'idle in transaction');
            if (b) return { replica: r, b };
          }
          return null;
        }, 500);
        if (!stale) continue;
        // Temporal gives up on the frozen attempt after the heartbeat timeout (10 s) and runs the batch again on
        // another worker: that attempt waits for the progress row the frozen one holds.
        const waiter = await waitFor(`a second attempt of replica ${stale.replica}'s batch waiting on its progress row`, async () =>
          (await replicaBackends(f.w, stale.replica)).find((x) => x.pid !== stale.b.pid && x.waitEventType === 'Lock') ?? null,
        60_000);
        caught = { proc, replica: stale.replica, stale: stale.b, waiter };
        console.log(`fault 15: froze apply pid ${proc.child.pid} for ${((Date.now() - t0) / 1000).toFixed(1)}s inside a batch of replica ${stale.replica} (backend ${stale.b.pid}); a second attempt (backend ${waiter.pid}) waits on the progress row`);
      } finally {
        proc.child.kill('SIGCONT');
      }
    }
    expect(caught, 'an apply process frozen inside a batch while another attempt of it ran').not.toBeNull();
    // The thawed process finishes (or abandons) its stale batch and lets go of the row; the second attempt goes on.
    await waitFor('the second attempt to get the progress row', async () =>
      !(await replicaBackends(f.w, caught!.replica)).some((x) => x.pid === caught!.waiter.pid && x.waitEventType === 'Lock'),
    60_000);
    const t0 = Date.now();
    await f.more(load, 300, 120_000);
    for (const p of [f.apply!, ...extra]) expect(p.child.exitCode, `apply process ${p.child.pid} still running`).toBeNull();
    const row = await f.settle(load, { n: 15, fault: 'two apply workers at once (extra up + worker on the apply queue; one frozen mid-batch, then thawed)', t0 });
    console.log(`fault 15: ${row.transactions} source transactions; lost ${row.lost}, duplicated ${row.duplicated}; converged ${row.convergedSeconds}s after the thaw`);
  });

  it('fault 15: a second deployment (its own Temporal) applying to the same replicas at once: no duplicates', async () => {
    other = await startTemporal();
    const second = await startUp(f.w, upArgs(f.w, ['--queues', 'apply']), { TEMPORAL_ADDRESS: other.address });
    extra.push(second);
    const load = startLoad(f);
    const t0 = Date.now();
    // Both deployments' replica workflows run batches on the same replica databases.
    const connection = await Connection.connect({ address: other.address });
    try {
      const client = new Client({ connection });
      const work = async () =>
        Promise.all(REPLICAS.map(async (r) => {
          // The workflow's count plus the session in flight's (its heartbeat), as pgferry status shows it.
          const id = replicaWorkflowId(r);
          const st = withLiveSession(await client.workflow.getHandle(id).query(replicaStatusQuery), (await pendingActivity(client, id))?.heartbeat);
          return { replica: r, batches: st.batches, txns: st.txns };
        }));
      const start = await work();
      await f.more(load, 1500, 180_000);
      const row = await f.settle(load, { n: 15, fault: 'two deployments (two Temporals) applying the same replicas at once', t0 });
      const after = await work();
      console.log(
        `fault 15: the second deployment's replica workflows, while the first ran too: ${JSON.stringify(start)} → ${JSON.stringify(after)} (batches run, transactions applied); ` +
          `${row.transactions} source transactions; lost ${row.lost}, duplicated ${row.duplicated}; converged ${row.convergedSeconds}s after the second deployment started`,
      );
      for (const [i, r] of REPLICAS.entries()) expect(after[i].batches, `batches of the second deployment on replica ${r}`).toBeGreaterThan(start[i].batches);
    } finally {
      await connection.close().catch(() => undefined);
    }
  });
});
