import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, fingerprint, StopWaiting } from '../helpers/fixture';
import { runCli, startCli } from '../helpers/procs';
import { waitFor } from '../helpers/wait';
import { systemStatus, withTemporal } from './harness/operator';
import { recordRow, short } from './harness/rows';
import { settleReported } from './harness/settle';
import { FaultWorld, REPLICAS } from './harness/system';

/**
 * Fault 18: the process running `replica add late --snapshot` is killed (-9)
 * in the middle of the copy, while the audit workload writes. While the copy
 * is incomplete nothing may report `late` as a healthy, running replica; the
 * same command run again re-attaches to the snapshot workflow and the copy
 * restarts cleanly (the tables it claimed emptied first); once added to `up`,
 * late catches up and equals the source (audit: 0 lost, 0 doubled), as do a
 * and b, which run throughout.
 *
 * Then the operator's likely mistake: a second replica `half` whose add was
 * killed mid-copy is given to `up` (the README's next step after add) without
 * running add again. It must not be reported running while its copy is
 * incomplete.
 */
const BULK_ROWS = Number(process.env.PGFERRY_FAULT_SNAPSHOT_ROWS ?? 300_000);
const BULK = `CREATE TABLE bulk (id bigint PRIMARY KEY, v text NOT NULL);`;
const FILL = `INSERT INTO bulk SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, ${BULK_ROWS}) g`;

describe('fault 18: kill -9 of replica add --snapshot mid-copy', () => {
  let f: FaultWorld;

  beforeAll(async () => {
    f = await FaultWorld.create({ schema: BULK });
    // The same rows everywhere: a and b start as copies of the source, as up assumes.
    await Promise.all([f.w.source.withClient('app', (c) => c.query(FILL)), ...REPLICAS.map((r) => f.w.replicas.withClient(`replica_${r}`, (c) => c.query(FILL)))]);
    await f.start();
  });

  afterAll(async () => {
    await f?.teardown();
  });

  /** Start `replica add <name> --snapshot` and kill -9 it in the middle of the big table's copy; returns what the replica holds then. */
  async function killMidCopy(name: string, url: string): Promise<{ copying: number; bulk: number; audit: number; claims: number }> {
    const args = ['replica', 'add', name, '--snapshot', '--create-tables', '--parallel', '1', '--source', f.w.sourceUrl, '--replica', `${name}=${url}`];
    const add = startCli(args, f.w.env);
    // The replica's own view of the COPY into bulk (uncommitted rows are not visible otherwise).
    const copying = await f.w.replicas.withClient(`replica_${name}`, (c) =>
      waitFor('the copy to be under way in table bulk', async () => {
        if (add.child.exitCode !== null) throw new StopWaiting(`add exited before the copy of bulk was seen:\n${add.output()}`);
        const r = await c.query(
          `SELECT p.tuples_processed::bigint AS n FROM pg_stat_progress_copy p JOIN pg_class k ON k.oid = p.relid
           WHERE p.datname = current_database() AND k.relname = 'bulk'`,
        );
        const n = Number(r.rows[0]?.n ?? 0);
        return n >= 10_000 ? n : null;
      }, 180_000, 20),
    );
    await add.kill9();
    return f.w.replicas.withClient(`replica_${name}`, async (c) => ({
      copying,
      bulk: Number((await c.query('SELECT count(*) FROM bulk')).rows[0].count),
      audit: Number((await c.query('SELECT count(*) FROM audit')).rows[0].count),
      claims: Number((await c.query('SELECT count(*) FROM pgferry.snapshot_claims')).rows[0].count),
    }));
  }

  /** What the CLI says about a replica whose copy is incomplete: never running. */
  async function reportedWhileIncomplete(name: string): Promise<string> {
    const one = await cli(f.w, ['replica', 'status', name, '--json']);
    const v = (() => { try { return JSON.parse(one.stdout); } catch { return {}; } })();
    expect(v.state, `replica status ${name}: ${one.stdout}${one.stderr}`).not.toBe('running');
    expect(one.code).not.toBe(0);
    const list = await cli(f.w, ['replica', 'list', '--json']);
    expect(JSON.parse(list.stdout).map((r: { name: string }) => r.name)).not.toContain(name);
    const all = await systemStatus(f);
    expect((all.v.replicas as { replica: string }[]).map((r) => r.replica)).not.toContain(name);
    return `replica status ${name}: exit ${one.code} "${short(v.error ?? v.message ?? one.stderr ?? one.stdout, 110)}"; not in replica list / status`;
  }

  it('the copy restarts cleanly, late is never reported running while incomplete, and ends exact', async () => {
    const load = f.load();
    await f.more(load, 200);
    const url = await f.w.replicas.createDatabase('replica_late');

    const t0 = Date.now();
    const killed = await killMidCopy('late', url);
    expect(killed.claims, 'the copy claimed its tables').toBe(1);
    expect(killed.bulk, 'killed before the big table was copied whole').toBeLessThan(BULK_ROWS);
    const said = await reportedWhileIncomplete('late');
    const progressRows = await f.w.replicas.withClient('replica_late', async (c) => Number((await c.query('SELECT count(*) FROM pgferry.progress')).rows[0].count));
    expect(progressRows, 'no progress row while the copy is incomplete').toBe(0);
    const wfState = await withTemporal(f, async (c) => (await c.workflow.getHandle('pgferry-snapshot-late').describe()).status.name);
    await f.more(load, 200);

    // The same command again: re-attaches, copies from the start, exits 0.
    const args = ['replica', 'add', 'late', '--snapshot', '--create-tables', '--parallel', '1', '--source', f.w.sourceUrl, '--replica', `late=${url}`];
    const again = await runCli(args, f.w.env, 600_000);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    const copied = /copied (\d+) rows/.exec(again.stdout)?.[1];
    await withTemporal(f, async (c) => expect((await c.workflow.getHandle('pgferry-snapshot-late').describe()).status.name).toBe('COMPLETED'));
    expect(await fingerprint(f.w.replicas, 'replica_late', 'bulk')).toEqual(await fingerprint(f.w.source, 'app', 'bulk'));

    // Added to up (the README's next step); the workload still writes.
    await f.apply!.stop();
    f.w.replicaUrls.late = url;
    await f.startApply();
    await f.more(load, 200);

    await settleReported(f, load, {
      n: 18,
      fault: 'kill -9 of replica add --snapshot mid-copy, then the same command again',
      t0,
      replicas: [...REPLICAS, 'late'],
      outcome:
        `killed while copying bulk (${killed.copying} rows into its COPY; then holding ${killed.bulk}/${BULK_ROWS} bulk rows, ${killed.audit} audit rows), claim recorded, no progress row; snapshot workflow ${wfState}; ${said}; ` +
        `re-run re-attached and copied ${copied ?? '?'} rows from the start (exit 0), bulk fingerprint equal; late added to up (converged s from the kill)`,
    });
  });

  it('a half-copied replica given to up (add not run again) is not reported running', async () => {
    const url = await f.w.replicas.createDatabase('replica_half');
    const killed = await killMidCopy('half', url);
    expect(killed.claims).toBe(1);
    const said = await reportedWhileIncomplete('half');

    await f.apply!.stop();
    f.w.replicaUrls.half = url;
    await f.startApply();
    // For 30 s, whatever it reports must not be running while the copy is incomplete.
    let seen = '';
    const states = new Set<string>();
    await waitFor('half to be reported running (it must not be)', async () => {
      const r = await cli(f.w, ['replica', 'status', 'half', '--json']);
      const v = (() => { try { return JSON.parse(r.stdout); } catch { return {}; } })();
      if (v.state) states.add(v.state);
      seen = `${v.state ?? '?'}${v.lastError ? `: ${short(v.lastError, 140)}` : ''}`;
      return v.state === 'running' && v.txns > 0;
    }, 30_000, 1000).catch(() => undefined);
    const rows = await f.w.replicas.withClient('replica_half', async (c) => ({
      claims: Number((await c.query('SELECT count(*) FROM pgferry.snapshot_claims')).rows[0].count),
      bulk: Number((await c.query('SELECT count(*) FROM bulk')).rows[0].count),
      progress: (await c.query('SELECT lsn::text, txns_applied::text FROM pgferry.progress')).rows[0] ?? null,
      doubled: Number((await c.query('SELECT count(*) - count(DISTINCT txn_id) AS d FROM audit')).rows[0].d),
    }));
    const bad = states.has('running');
    recordRow({
      n: 18,
      fault: 'half-copied replica (add killed, not run again) given to up',
      transactions: null,
      lost: null,
      duplicated: null,
      convergedSeconds: null,
      outcome:
        `${said}; after up with --replica half: states seen ${[...states].join(' → ') || 'none'} (last: ${seen}); ` +
        `replica holds ${rows.bulk}/${BULK_ROWS} bulk rows, snapshot claim ${rows.claims ? 'still present' : 'gone'}, progress ${rows.progress ? `row created (lsn ${rows.progress.lsn}, ${rows.progress.txns_applied} txns applied)` : 'none'}, ` +
        `${rows.doubled} audit rows doubled (the copied audit rows applied again from the stream's start)` +
        (bad ? '; PRODUCT BUG: reported running (and applying the stream) while its snapshot copy is incomplete' : ''),
    });
    expect(bad, `half reported running while its copy is incomplete (${seen}); bulk ${rows.bulk}/${BULK_ROWS}, claim ${rows.claims}`).toBe(false);
  });
});
