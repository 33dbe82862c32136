import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { crashedAt, crashEnv } from './harness/faults';
import { maxActivityAttempt, progressLsn } from './harness/inspect';
import { FaultWorld, REPLICAS } from './harness/system';
import { startLoad, stopLoads } from './harness/workload';
import { replicaWorkflowId } from '../../src/names';

/**
 * Fault 3: kill -9 of the apply worker between the replica COMMIT and the
 * activity's completion (test-only crash point `apply-after-commit`, see
 * src/testing/crash-point.ts). The batch's data and its pgferry.progress row
 * are committed, but Temporal never hears of it: after the heartbeat timeout
 * it runs the same batch again on the restarted worker, which must find the
 * position already moved and skip what it re-reads.
 */
describe('fault 3: kill -9 of the apply worker after the replica commit', () => {
  let f: FaultWorld;

  beforeAll(async () => {
    f = await FaultWorld.create();
  });

  afterEach(stopLoads);

  afterAll(async () => {
    await f?.teardown();
  });

  it('fault 3: the re-run batch skips what was committed; nothing lost or duplicated', async () => {
    // Armed for the 30th batch that applies something (both replicas count): a few seconds into the load.
    // One-second apply sessions: a session's attempt shows in the workflow history only once it has
    // ended, so the re-run session must end (and later ones too) before the attempts are counted.
    const sessions = { PGFERRY_APPLY_SESSION_SECONDS: '1' };
    const armed = await f.startApply({ ...crashEnv('apply-after-commit', 30), ...sessions });
    await f.startCapture();
    const load = startLoad(f);
    await crashedAt(armed, 'apply-after-commit');
    const t0 = Date.now();
    const committed = await Promise.all(REPLICAS.map((r) => progressLsn(f.w, r)));
    expect(committed.some((lsn) => lsn !== null && lsn !== '0/0'), 'some batches were committed before the crash').toBe(true);
    await f.more(load, 200); // writes while nothing applies
    await f.startApply(sessions);
    await f.more(load, 400, 180_000);
    const row = await f.settle(load, { n: 3, fault: 'kill -9 of apply after the replica COMMIT, before the activity completed', t0 });
    // The session whose last COMMIT the crash hid from Temporal was run again (a later attempt), and skipped what it had applied.
    const attempts = await Promise.all(REPLICAS.map((r) => maxActivityAttempt(f.w.temporal.address, replicaWorkflowId(r), 'applySession')));
    expect(Math.max(...attempts), 'highest applySession attempt per replica').toBeGreaterThanOrEqual(2);
    console.log(
      `fault 3: crashed with replica positions ${JSON.stringify(committed)}; applySession re-run (highest attempt per replica ${JSON.stringify(attempts)}); ${row.transactions} source transactions; ` +
        `lost ${row.lost}, duplicated ${row.duplicated}; converged ${row.convergedSeconds}s after the crash`,
    );
  });
});
