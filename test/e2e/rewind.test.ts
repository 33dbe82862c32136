import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import { cli, createWorld, progressOf, startUp, upArgs, waitForEqual, World } from '../helpers/fixture';
import { audit, AUDIT_SCHEMA, AUDIT_TABLES, Workload } from '../helpers/workload';
import { waitFor } from '../helpers/wait';

/**
 * A replica restored from a backup taken at a known source position
 * continues from there with `replica rewind --to`, using the retained stream.
 */
const BIN = '/usr/lib/postgresql/15/bin';

describe('replica rewind', () => {
  let w: World;
  let up: Proc;
  let running: Workload | undefined;

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a'], schema: AUDIT_SCHEMA });
    up = await startUp(w);
  });

  afterAll(async () => {
    await running?.stop().catch(() => undefined); // a failed test leaves it writing: stop it before the source goes
    await up?.stop();
    await w?.teardown();
  });

  const status = async (name: string) => JSON.parse((await cli(w, ['replica', 'status', name, '--json'])).stdout);

  it('continues a copy of a replica taken at a known position, and refuses a position the stream no longer holds', async () => {
    const workload = new Workload(w.sourceUrl, 1);
    running = workload;
    workload.start();
    await waitFor('the workload to be under way', async () => workload.committed > 200);
    // A known position means one a has reached: 0/0 (nothing applied yet, possible on a loaded machine) is no source position.
    await waitFor('a to apply transactions', async () => Number((await progressOf(w, 'a')).txns_applied) > 20);

    // A backup of replica a at a known position: pause it, note its position, copy its tables (not pgferry's bookkeeping).
    expect((await cli(w, ['replica', 'pause', 'a'])).code).toBe(0);
    await waitFor('a to be paused', async () => (await status('a')).state === 'paused');
    const at = (await progressOf(w, 'a')).lsn;
    const copyUrl = await w.replicas.createDatabase('replica_copy');
    const dump = execFileSync(`${BIN}/pg_dump`, ['--no-owner', '--exclude-schema=pgferry', w.replicaUrls.a], { maxBuffer: 1 << 30 });
    execFileSync(`${BIN}/psql`, ['-q', '-v', 'ON_ERROR_STOP=1', copyUrl], { input: dump });
    expect((await cli(w, ['replica', 'resume', 'a'])).code).toBe(0);
    await waitFor('the source to move on', async () => workload.committed > 600);

    const rewind = (to: string) => cli(w, ['replica', 'rewind', 'copy', '--to', to, '--source', w.sourceUrl, '--replica', `copy=${copyUrl}`]);

    // A position older than anything the stream holds: said so, nothing changed. (Offset 0 is the stream's marker, no transaction.)
    const tooOld = await rewind('0/1');
    expect(tooOld.code).toBe(1);
    expect(tooOld.stderr).toMatch(new RegExp(`pgferry: the stream of source '${w.sourceName}' no longer reaches back to 0/1: the oldest transaction it holds is \\S+ \\(offset 1\\); nothing was changed`));
    const none = await w.replicas.withClient('replica_copy', (c) => c.query(`SELECT to_regclass('pgferry.progress') AS t`));
    expect(none.rows[0].t).toBeNull();

    const bad = await rewind('yesterday');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(`pgferry: --to 'yesterday' is not a source position`);

    const r = await rewind(at);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`replica 'copy' rewound to ${at.replace('/', '\\/')}: it reads the stream after offset \\d+ and applies from transaction \\S+ on`));

    // Run it as a replica: it converges to the source, every transaction exactly once.
    await up.stop();
    w.replicaUrls.copy = copyUrl;
    up = await startUp(w, upArgs(w));
    const committed = await workload.stop();
    await waitForEqual(w, 'copy', AUDIT_TABLES, 180_000);
    await w.replicas.withClient('replica_copy', async (c) => expect(await audit(c)).toEqual({ rows: committed, distinct: committed }));
    await waitForEqual(w, 'a', AUDIT_TABLES);
  });
});
