import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/wait';
import { restartTemporal } from './harness/faults';
import { FaultWorld, REPLICAS, Supervisor } from './harness/system';
import { waitForReplicasRunning } from './harness/wait';

/**
 * Fault 5: the Temporal dev server killed (SIGKILL) while the workload writes,
 * down for a while, then started again on the same port with the same SQLite
 * file. Capture and apply workers lose their server mid-activity; the
 * workflows resume from the persisted history, and the replicas' own
 * checkpoints decide what is applied.
 */
const DOWN_MS = 10_000;

describe('fault 5: Temporal dev server killed and restarted', () => {
  let f: FaultWorld;
  let sup: Supervisor | null = null;

  beforeAll(async () => {
    f = await FaultWorld.create();
    await f.start();
  });

  afterAll(async () => {
    await sup?.stop();
    await f?.teardown();
  });

  it('SIGKILL, then a restart on the same port and data: nothing lost or duplicated', async () => {
    sup = new Supervisor(f).start();
    const load = await f.steadyLoad();
    const t0 = Date.now();
    const { downMs } = await restartTemporal(f.w, async () => {
      // Temporal stays dead for DOWN_MS of the workload committing (at least 300 more source transactions).
      const target = load.committed + 300;
      await waitFor(`${DOWN_MS / 1000} s and 300 source transactions with Temporal down`, () => Date.now() - t0 >= DOWN_MS && load.committed >= target, 120_000, 100);
    });
    await f.more(load, 300, 180_000);
    await f.settle(load, { n: 5, fault: `Temporal dev server killed (SIGKILL), down ${(downMs / 1000).toFixed(0)} s, restarted on its port and SQLite file${sup.crashes.length ? `; pgferry crashed ${sup.crashes.length}× (restarted by the test)` : ''}`, t0 });
    await sup.stop();
    expect.soft(sup.summary(), 'pgferry processes exited during the fault (a service manager would restart them; this one did)').toBe('');

    const status = await waitForReplicasRunning(f);
    expect(status.replicas.map((r) => [r.replica, r.state])).toEqual(REPLICAS.map((n) => [n, 'running']));
  });
});
