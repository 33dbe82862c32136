import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, progressOf } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';
import { checkPrefix } from './harness/audit';
import { captureStatus, replicaStatus, resync, systemStatus } from './harness/operator';
import { short } from './harness/rows';
import { settleReported } from './harness/settle';
import { FaultWorld } from './harness/system';
import { waitReplicaState } from './harness/wait';
import { sourceAudit } from './harness/workload';

/**
 * Fault 11: stream retention removes what a paused replica still needs, while
 * the audit workload runs. The source name is fresh (each world's is), so its
 * stream is created with a small retention (2 MB in 250 kB segments). Replica
 * b is paused; large transactions push the stream past b's position, paced so
 * that the running replica a never falls that far behind. Resumed, b must stop
 * in `needs_resync` with the reason and apply nothing past the gap (it keeps
 * a gap-free prefix at the offset it had) — not skip to what is retained.
 * `replica resync b` under the workload then makes it exact; a stays exact.
 */
const RETENTION = { PGFERRY_STREAM_MAX_BYTES: '2000000', PGFERRY_STREAM_SEGMENT_BYTES: '250000' };

describe('fault 11: stream retention removes what a paused replica needs', () => {
  let f: FaultWorld;

  beforeAll(async () => {
    f = await FaultWorld.create({ env: RETENTION });
    await f.start();
  });

  afterAll(async () => {
    await f?.teardown();
  });

  it('b needs_resync with the reason, nothing applied past the gap; a unaffected; b exact after resync', async () => {
    const before = new Set((await sourceAudit(f)).keys());
    const load = f.load(5);
    await f.more(load, 200);
    await Promise.all([f.applied('a', 100), f.applied('b', 100)]);

    expect((await cli(f.w, ['replica', 'pause', 'b'])).code).toBe(0);
    await waitReplicaState(f, 'b', ['paused'], 30_000);
    const consumed: number = (await replicaStatus(f, 'b')).v.offset;
    expect(consumed).toBeGreaterThan(0);

    // Large transactions (40 kB events, not audited) beside the workload, a few at a time, each
    // round waiting for a to consume what is in the stream: only the paused b falls off the end.
    const t0 = Date.now();
    let filler = 0;
    const gone = await waitFor('retention to remove the offset b consumed last', async () => {
      const { v } = await captureStatus(f);
      if (v.retained?.first && v.retained.first.offset > consumed) return v.retained as { first: { offset: number }; last: { offset: number } };
      await f.w.source.withClient('app', async (c) => {
        for (let i = 0; i < 8; i++) await c.query(`INSERT INTO events (counter_id, payload) VALUES (0, jsonb_build_object('filler', repeat('x', 40000)))`);
      });
      filler += 8;
      const last = (await captureStatus(f)).v.retained?.last?.offset ?? 0;
      await waitFor('a to consume the stream so far', async () => Number((await progressOf(f.w, 'a')).stream_offset) >= last, 60_000, 200);
      return null;
    }, 240_000, 0);

    expect((await cli(f.w, ['replica', 'resume', 'b'])).code).toBe(0);
    const stopped = await waitReplicaState(f, 'b', ['needs_resync'], 60_000);
    const reportedIn = (Date.now() - t0) / 1000;
    expect(stopped.code).toBe(1);
    expect(stopped.v.lastError).toMatch(
      new RegExp(
        `^replica 'b': the stream of source '${f.w.sourceName}' no longer holds offset ${consumed}, the last this replica consumed ` +
          `\\(the first retained is \\d+\\): retention removed changes this replica may not have applied; run pgferry replica resync b`,
      ),
    );
    // Not a skip: b is still at the offset it had, holding a gap-free prefix of the workload.
    expect((await replicaStatus(f, 'b')).v.offset).toBe(consumed);
    const prefix = await checkPrefix(f, 'b', before);
    expect(prefix, 'b holds a gap-free prefix of the workload').toMatchObject({ holes: 0, foreign: 0, duplicated: 0 });
    // The whole system says so, and a goes on.
    const all = await systemStatus(f);
    expect(all.code).toBe(1);
    expect(all.v.replicas.find((r: { replica: string }) => r.replica === 'b').state).toBe('needs_resync');
    expect(all.v.replicas.find((r: { replica: string }) => r.replica === 'a').state).toBe('running');

    // The operator's fix, under the workload.
    const fixedAt = Date.now();
    const r = await resync(f, 'b');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`replica 'b': resumed; it catches up from the stream`);
    await waitReplicaState(f, 'b', ['running'], 60_000);
    await f.more(load, 200);

    await settleReported(f, load, {
      n: 11,
      fault: 'stream retention (2 MB) removed what paused replica b needed',
      t0: fixedAt,
      outcome:
        `b (paused at offset ${consumed}; first retained ${gone.first.offset} after ${filler} large txns) resumed → needs_resync in ${reportedIn.toFixed(1)} s: ` +
        `"${short(stopped.v.lastError, 200)}"; b stayed at offset ${consumed} with a gap-free prefix (${prefix.held} txns, 0 holes), nothing applied past the gap; ` +
        `a running throughout; after replica resync b under the workload (converged s counted from the resync)`,
    });
  });
});
