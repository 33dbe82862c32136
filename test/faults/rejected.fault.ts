import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, progressOf, waitForEqual } from '../helpers/fixture';
import { compareLsn } from '../../src/lsn';
import { auditReplicas, checkPrefix } from './harness/audit';
import { replicaStatus } from './harness/operator';
import { short } from './harness/rows';
import { settleReported } from './harness/settle';
import { FaultWorld } from './harness/system';
import { waitReplicaState } from './harness/wait';
import { AUDIT_TABLES, sourceAudit } from './harness/workload';

/**
 * Fault 12: a poison row, rejected by one replica only (replica b has a CHECK
 * constraint the source lacks), arrives in the middle of the audit workload.
 * b stops in `failed` naming the table, the key and the database's message,
 * keeping every transaction before it (a gap-free prefix); a carries on and is
 * exact. After the operator drops the constraint and runs `replica resume b`,
 * b continues from the rejected transaction and is exact too.
 */
describe('fault 12: a poison row rejected by one replica', () => {
  let f: FaultWorld;

  beforeAll(async () => {
    f = await FaultWorld.create();
    await f.w.replicas.withClient('replica_b', (c) => c.query(`ALTER TABLE events ADD CONSTRAINT no_poison CHECK (payload IS NULL OR NOT payload ? 'poison')`));
    await f.start();
  });

  afterAll(async () => {
    await f?.teardown();
  });

  it('b failed with table, key and message; a unaffected and exact; b exact after the fix and resume', async () => {
    const before = new Set((await sourceAudit(f)).keys());
    const load = f.load();
    await f.more(load, 200);
    // The poison transaction: an audit row (so it is counted) and an event b refuses.
    const poisonId = await f.w.source.withClient('app', async (c) => {
      await c.query('BEGIN');
      await c.query('INSERT INTO audit VALUES (gen_random_uuid(), -1)');
      const id = (await c.query(`INSERT INTO events (counter_id, payload) VALUES (1, '{"poison": true}') RETURNING id`)).rows[0].id as string;
      await c.query('COMMIT');
      return id;
    });
    const t0 = Date.now();
    await f.more(load, 200);

    const failed = await waitReplicaState(f, 'b', ['failed'], 60_000);
    const reportedIn = (Date.now() - t0) / 1000;
    expect(failed.code).toBe(1);
    expect(failed.v.lastError).toMatch(
      new RegExp(
        `^replica 'b': insert on public\\.events key \\{"id":"${poisonId}"\\} at source position [0-9A-F]+/[0-9A-F]+ was rejected: ` +
          `new row for relation "events" violates check constraint "no_poison" \\[23514\\]; fix the replica \\(or the row\\), then run pgferry replica resume b$`,
      ),
    );
    const rejectedAt = /at source position (\S+) was rejected/.exec(failed.v.lastError)![1];
    // The whole system says so too (exit 1, a warning naming b).
    const all = await cli(f.w, ['status', '--json']);
    expect(all.code).toBe(1);
    expect(JSON.parse(all.stdout).warnings.join('\n')).toContain(`replica 'b' is failed: replica 'b': insert on public.events`);

    // a is unaffected: still running, still applying while b is stopped.
    const aBefore = (await progressOf(f.w, 'a')).txns_applied;
    await f.more(load, 200);
    await f.applied('a', Number(aBefore) + 100);
    expect((await replicaStatus(f, 'a')).v.state).toBe('running');

    // b kept everything before the poison transaction, in order, and nothing after it.
    const bPrefix = await checkPrefix(f, 'b', before);
    expect(bPrefix, 'b holds a gap-free prefix of the workload').toMatchObject({ holes: 0, foreign: 0, duplicated: 0 });
    expect(compareLsn((await progressOf(f.w, 'b')).lsn, rejectedAt)).toBe(-1);
    expect((await replicaStatus(f, 'b')).v.state).toBe('failed'); // no silent retry into running

    // a, with the workload stopped: exact while b is still failed.
    const firstLoad = await load.stop();
    await waitForEqual(f.w, 'a', AUDIT_TABLES, 180_000);
    const aAudit = await auditReplicas(f.w, ['a']);
    expect(aAudit.per.a, 'a while b is failed').toEqual({ lost: 0, duplicated: 0 });

    // The operator's fix, under a new workload: drop the constraint, resume b.
    const load2 = f.load();
    await f.more(load2, 100);
    await f.w.replicas.withClient('replica_b', (c) => c.query('ALTER TABLE events DROP CONSTRAINT no_poison'));
    const fixedAt = Date.now();
    expect((await cli(f.w, ['replica', 'resume', 'b'])).code).toBe(0);
    await waitReplicaState(f, 'b', ['running'], 60_000);
    await f.more(load2, 200);
    const bStatus = (await replicaStatus(f, 'b')).v;
    expect(bStatus.lastError).toBeNull();

    await settleReported(f, load2, {
      n: 12,
      fault: 'poison row rejected by replica b only (CHECK constraint on b)',
      t0: fixedAt,
      priorTransactions: firstLoad + 1,
      outcome:
        `b failed in ${reportedIn.toFixed(1)} s with "${short(failed.v.lastError.replace(/ at source position \S+/, ''), 240)}", ` +
        `keeping a gap-free prefix (${bPrefix.held} of ${bPrefix.committed} txns, 0 holes); a running throughout, exact while b failed (${aAudit.per.a.lost} lost / ${aAudit.per.a.duplicated} dup); ` +
        `after DROP CONSTRAINT + replica resume b (converged s counted from the fix)`,
    });
  });
});
