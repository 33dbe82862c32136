import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, createWorld, startUp, upArgs, waitForEqual, World, contentOf } from '../helpers/fixture';
import { runCli, Proc } from '../helpers/procs';
import { waitFor } from '../helpers/wait';

/**
 * Defect B: positions that go backwards. Trigger capture uninstalled and
 * installed again starts its ticks at 1, far below what the replicas
 * applied. Every message now carries the source history, so the replicas
 * stop in `needs_resync`, naming the cause, instead of counting the new
 * transactions as "already applied" and staying `running` without them.
 */
const SCHEMA = `CREATE TABLE items (id int PRIMARY KEY, v text);`;

describe('a new source history (trigger capture re-installed)', () => {
  let w: World;
  let up: Proc | null = null;
  const sql = (q: string) => w.source.withClient('app', (c) => c.query(q));
  const args = () => upArgs(w, ['--mode', 'trigger']);

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a'], schema: SCHEMA, sourceSettings: { wal_level: 'replica' } });
  });
  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  it('stops the replica in needs_resync with the reason, applies nothing of the new history, and resync rebuilds it', async () => {
    up = await startUp(w, args());
    for (let i = 1; i <= 50; i++) await sql(`INSERT INTO items VALUES (${i}, 'first install')`);
    await waitForEqual(w, 'a', ['items']);
    await up.stop();

    const removed = await cli(w, ['uninstall', '--yes', '--mode', 'trigger', '--source', w.sourceUrl]);
    expect(removed.code, removed.stderr).toBe(0);
    await sql(`INSERT INTO items VALUES (1000, 'while uninstalled')`);

    up = await startUp(w, args()); // installs trigger capture anew: ticks start again at 1
    for (let i = 51; i <= 60; i++) await sql(`INSERT INTO items VALUES (${i}, 'second install')`);

    const status = await waitFor(
      "replica 'a' to stop in needs_resync",
      async () => {
        const r = await cli(w, ['replica', 'status', 'a', '--json']);
        const v = r.stdout ? JSON.parse(r.stdout) : null;
        return v?.state === 'needs_resync' ? v : null;
      },
      120_000,
      1000,
    );
    expect(status.lastError).toMatch(/another source history|was lost and installed anew/);
    // Nothing of the new history reached it.
    const rows = (await contentOf(w.replicas, 'replica_a', ['items'])).items;
    expect(rows).toHaveLength(50);
    expect(rows.every((r) => r.includes('first install'))).toBe(true);

    const r = await runCli(['replica', 'resync', 'a', '--mode', 'trigger', '--source', w.sourceUrl, '--replica', `a=${w.replicaUrls.a}`], w.env, 600_000);
    expect(r.code, r.stderr).toBe(0);
    for (let i = 61; i <= 65; i++) await sql(`INSERT INTO items VALUES (${i}, 'after resync')`);
    await waitForEqual(w, 'a', ['items']);
  });

  it('verify works on a trigger-mode source (defect J: it refused it), waiting on trigger positions, and names a row altered by hand', async () => {
    const verifyArgs = ['verify', 'a', '--mode', 'trigger', '--source', w.sourceUrl, '--replica', `a=${w.replicaUrls.a}`];
    const same = await cli(w, verifyArgs);
    expect(same.code, same.stdout + same.stderr).toBe(0);
    await w.replicas.withClient('replica_a', (c) => c.query(`UPDATE items SET v = 'altered by hand' WHERE id = 61`));
    const differs = await cli(w, verifyArgs);
    expect(differs.code, differs.stdout + differs.stderr).toBe(1);
    expect(differs.stdout).toMatch(/61/);
  });
});
