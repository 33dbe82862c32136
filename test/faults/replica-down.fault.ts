import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from '../helpers/fixture';
import { FaultWorld, REPLICAS, Supervisor } from './harness/system';

/**
 * Fault 6: a replica database down for 60 s while the source keeps writing.
 * Both replicas live in one PostgreSQL cluster, so stopping it (pg_ctl -m
 * fast) takes both down. While it is down `pgferry replica status --json`
 * must show each replica retrying with the error; after the cluster is back
 * both catch up with nothing lost or duplicated.
 */
const DOWN_MS = 60_000;

interface View {
  replica: string;
  state: string;
  retrying: string | null;
  lastError: string | null;
}

describe('fault 6: replica database down', () => {
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

  it('replica cluster (replicas a and b) stopped for 60 s: retrying while down, then nothing lost or duplicated', async () => {
    sup = new Supervisor(f).start();
    const load = await f.steadyLoad();

    const downAt = Date.now();
    const committedAtDown = load.committed;
    const seen: Record<string, View> = {};
    const statusErrors: string[] = [];
    try {
      f.w.replicas.stop('fast');
      // The deliberate 60 s down time, measured while the workload keeps committing: every round waits
      // for more source transactions (the source is unaffected), and samples `replica status` until
      // each replica has shown its retrying error.
      while (Date.now() - downAt < DOWN_MS) {
        await f.more(load, 20, 30_000);
        if (REPLICAS.every((r) => seen[r])) continue;
        const r = await cli(f.w, ['replica', 'status', '--json']);
        const out = JSON.parse(r.stdout || 'null') as View[] | { error?: string } | null;
        if (!Array.isArray(out)) {
          statusErrors.push(`+${((Date.now() - downAt) / 1000).toFixed(0)} s: exit ${r.code}: ${r.stdout.trim() || r.stderr.trim().split('\n')[0]}`);
          continue;
        }
        for (const v of out) if (v.retrying && !seen[v.replica]) seen[v.replica] = v;
      }
      expect(load.committed - committedAtDown, 'source transactions committed while the replicas were down').toBeGreaterThan(1000);
    } finally {
      f.w.replicas.start();
    }
    const t0 = Date.now();
    const downSeconds = (t0 - downAt) / 1000;
    console.log(
      `replicas down ${downSeconds.toFixed(1)} s; replica status while down:\n${JSON.stringify(seen, null, 2)}\n` +
        `replica status failures while down: ${statusErrors.length ? statusErrors.join('\n') : 'none'}\ncrashes: ${sup.summary() || 'none'}`,
    );
    await f.more(load, 300, 180_000);
    await f.settle(load, { n: 6, fault: `replica database down ${downSeconds.toFixed(0)} s (the replica cluster stopped -m fast: replicas a and b both down; converged counted from its restart)${sup.crashes.length ? `; pgferry crashed ${sup.crashes.length}× (restarted by the test)` : ''}`, t0 });
    await sup.stop();
    const views = JSON.parse((await cli(f.w, ['replica', 'status', '--json'])).stdout) as View[];
    expect(views.filter((v) => REPLICAS.includes(v.replica)).map((v) => [v.replica, v.state])).toEqual(REPLICAS.map((n) => [n, 'running']));
    expect.soft(sup.summary(), 'pgferry processes exited during the fault (a service manager would restart them; this one did)').toBe('');
    for (const r of REPLICAS) {
      expect(seen[r], `replica ${r}: replica status --json showed a retrying error while its database was down (status failures: ${statusErrors.slice(0, 3).join('; ')})`).toBeDefined();
      expect(seen[r].state).not.toMatch(/failed|needs_resync/);
      expect(seen[r].retrying).toMatch(/replica|connect|ECONNREFUSED|shut/i);
    }
  });
});
