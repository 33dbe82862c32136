import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';
import { FaultWorld, REPLICAS, Supervisor } from './harness/system';

/**
 * Fault 8: pg_terminate_backend, several times during the workload, on the
 * source's walsender (capture's replication connection) and on every apply
 * connection to the replica databases (all client backends of replica_a and
 * replica_b but the test's own). Capture reconnects and resumes from the
 * slot; apply retries its batch, skipping what the replica's checkpoint says
 * is applied.
 */
const ROUNDS = 4;
const REPLICA_DBS = REPLICAS.map((r) => `replica_${r}`);

describe('fault 8: pg_terminate_backend on the walsender and the apply connections', () => {
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

  /**
   * The walsender streaming capture's slot. (Not every walsender: capture's start also opens short
   * replication connections of its own — IDENTIFY_SYSTEM for the source history — which may end by
   * themselves between being listed and terminated; the first full run counted 3 terminations of 4 so.)
   */
  const walsenders = () =>
    f.w.source.withClient('postgres', async (c) =>
      (await c.query(`SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = $1 AND active`, [`pgferry_${f.w.sourceName}`])).rows.map((r) => r.pid as number),
    );
  /** Client backends of the replica databases, the test's own excluded (it connects to 'postgres'). */
  const applyBackends = () =>
    f.w.replicas.withClient('postgres', async (c) =>
      (await c.query(`SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname = ANY($1) AND pid <> pg_backend_pid()`, [REPLICA_DBS])).rows.map((r) => r.pid as number),
    );
  const terminate = (cluster: 'source' | 'replicas', pids: number[]) =>
    f.w[cluster].withClient('postgres', async (c) => (await c.query(`SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM unnest($1::int[]) pid`, [pids])).rows[0].n as number);

  it(`${ROUNDS} rounds of terminating the walsender and the apply connections: nothing lost or duplicated`, async () => {
    sup = new Supervisor(f).start();
    const load = await f.steadyLoad();
    const t0 = Date.now();
    const killed = { walsender: 0, apply: 0 };
    const killedWalsenders = new Set<number>();
    const log = (what: string) => console.log(`+${((Date.now() - t0) / 1000).toFixed(1)} s: ${what}`);
    for (let round = 1; round <= ROUNDS; round++) {
      // A walsender other than those already terminated: capture has reconnected.
      const ws = await waitFor(`round ${round}: capture's walsender (reconnected)`, async () => {
        const pids = (await walsenders()).filter((p) => !killedWalsenders.has(p));
        return pids.length ? pids : null;
      }, 120_000, 100);
      killed.walsender += await terminate('source', ws);
      ws.forEach((p) => killedWalsenders.add(p));
      log(`round ${round}: terminated walsender ${ws.join(', ')}`);
      await f.more(load, 150, 120_000);

      // Apply connections exist while batches are applied (the workload keeps them busy).
      const ab = await waitFor(`round ${round}: apply connections to the replica databases`, async () => {
        const pids = await applyBackends();
        return pids.length ? pids : null;
      }, 120_000, 50).catch(async (err) => {
        throw new Error(`${(err as Error).message}\nreplica status: ${(await cli(f.w, ['replica', 'status', '--json'])).stdout}\ncrashes so far:\n${sup?.summary()}\napply output (tail):\n${f.apply?.output().slice(-3000)}`);
      });
      killed.apply += await terminate('replicas', ab);
      log(`round ${round}: terminated apply backends ${ab.join(', ')}`);
      await f.more(load, 150, 120_000);

      // Last rounds: both at once.
      if (round > ROUNDS / 2) {
        const [w2, a2] = await Promise.all([walsenders(), applyBackends()]);
        const fresh = w2.filter((p) => !killedWalsenders.has(p));
        killed.walsender += await terminate('source', fresh);
        fresh.forEach((p) => killedWalsenders.add(p));
        killed.apply += await terminate('replicas', a2);
        log(`round ${round}: terminated walsender ${fresh.join(', ') || '(none yet)'} and apply backends ${a2.join(', ') || '(none)'} at once`);
        await f.more(load, 150, 120_000);
      }
    }
    console.log(`terminated: ${killed.walsender} walsender and ${killed.apply} apply backends`);
    expect(killed.walsender).toBeGreaterThanOrEqual(ROUNDS);
    expect(killed.apply).toBeGreaterThanOrEqual(ROUNDS);
    // Capture streams again after the last termination.
    await waitFor('capture to reconnect after the last termination', async () => (await walsenders()).some((p) => !killedWalsenders.has(p)), 120_000, 200);
    await f.more(load, 300, 120_000);
    await f.settle(load, {
      n: 8,
      fault: `pg_terminate_backend ×${ROUNDS} rounds: the walsender (${killed.walsender} terminated) and the apply connections of replica_a/replica_b (${killed.apply} terminated)${sup.crashes.length ? `; pgferry crashed ${sup.crashes.length}× (restarted by the test)` : ''}`,
      t0,
    });
    await sup.stop();
    expect.soft(sup.summary(), 'pgferry processes exited during the fault (a service manager would restart them; this one did)').toBe('');
  });
});
