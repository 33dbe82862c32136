import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import { cli, contentOf, createWorld, startUp, upArgs, waitForEqual, World } from '../helpers/fixture';

/**
 * A table with no columns (`CREATE TABLE t ()`) is a table like any other
 * (issue 26, item 6): its rows are empty, and there may be many of them.
 * In both capture modes: inserts (one by one, and enough in one
 * transaction for apply's COPY), deletes (keyless: REPLICA IDENTITY FULL,
 * as for any keyless table in WAL mode), TRUNCATE, a replica added from a
 * snapshot with --create-tables, resync, and verify. The oracle is the row count
 * (every row prints as `()`: content equality is count equality).
 */
const SCHEMA = `
  CREATE TABLE nocols ();
  ALTER TABLE nocols REPLICA IDENTITY FULL;
  CREATE TABLE other (id int PRIMARY KEY, v text);
`;
const TABLES = ['nocols', 'other'];

describe.each(['wal', 'trigger'] as const)('a table with no columns, %s capture', (mode) => {
  let w: World;
  let up: Proc;
  const args = () => upArgs(w, ['--mode', mode]);

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a'], schema: SCHEMA, sourceSettings: mode === 'trigger' ? { wal_level: 'replica' } : undefined });
    Object.assign(w.env, { PGFERRY_CAPTURE_MODE: mode });
    up = await startUp(w, args());
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  const src = (sql: string) => w.source.withClient('app', (c) => c.query(sql));
  const count = async (db: string, cluster = w.replicas) =>
    Number((await cluster.withClient(db, (c) => c.query('SELECT count(*) AS n FROM nocols'))).rows[0].n);

  it('replicates inserts of empty rows, deletes and TRUNCATE', async () => {
    await src('INSERT INTO nocols DEFAULT VALUES');
    await src('INSERT INTO nocols DEFAULT VALUES');
    await src('INSERT INTO nocols SELECT FROM generate_series(1, 200)'); // one transaction: apply's COPY path
    await src(`INSERT INTO other VALUES (1, 'after the empty rows')`);
    await waitForEqual(w, 'a', TABLES);
    expect(await count('replica_a')).toBe(202);

    await src('DELETE FROM nocols WHERE ctid = (SELECT ctid FROM nocols LIMIT 1)');
    await src('DELETE FROM nocols WHERE ctid IN (SELECT ctid FROM nocols LIMIT 50)');
    await src(`INSERT INTO other VALUES (2, 'after the deletes')`);
    await waitForEqual(w, 'a', TABLES);
    expect(await count('replica_a')).toBe(151);

    await src('TRUNCATE nocols');
    await src('INSERT INTO nocols DEFAULT VALUES');
    await src(`INSERT INTO other VALUES (3, 'after the truncate')`);
    await waitForEqual(w, 'a', TABLES);
    expect(await count('replica_a')).toBe(1);
  });

  it('replica add --snapshot --create-tables copies it, resync rebuilds a replica with it, and verify finds both replicas equal', async () => {
    await src('INSERT INTO nocols SELECT FROM generate_series(1, 30)');
    const lateUrl = await w.replicas.createDatabase('replica_late'); // empty: --create-tables makes both tables
    const add = await cli(w, ['replica', 'add', 'late', '--snapshot', '--create-tables', '--source', w.sourceUrl, '--replica', `late=${lateUrl}`]);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    expect(await count('replica_late')).toBe(31);

    await up.stop();
    w.replicaUrls.late = lateUrl;
    up = await startUp(w, args());
    await src('INSERT INTO nocols DEFAULT VALUES');
    await src('DELETE FROM nocols WHERE ctid = (SELECT ctid FROM nocols LIMIT 1)');
    await src('INSERT INTO nocols SELECT FROM generate_series(1, 5)');
    await Promise.all([waitForEqual(w, 'a', TABLES), waitForEqual(w, 'late', TABLES)]);
    expect(await count('replica_late')).toBe(36);
    expect(await contentOf(w.replicas, 'replica_late', TABLES)).toEqual(await contentOf(w.source, 'app', TABLES));

    // resync rebuilds a from a snapshot (a shadow copy swapped in): the empty rows come along.
    await w.replicas.withClient('replica_a', (c) => c.query('DELETE FROM nocols')); // a drifted replica
    const resync = await cli(w, ['replica', 'resync', 'a', '--source', w.sourceUrl, '--replica', `a=${w.replicaUrls.a}`]);
    expect(resync.code, resync.stdout + resync.stderr).toBe(0);
    await src('INSERT INTO nocols DEFAULT VALUES');
    await waitForEqual(w, 'a', TABLES);
    expect(await count('replica_a')).toBe(37);

    const verify = (r: string) => cli(w, ['verify', r, '--source', w.sourceUrl, '--replica', `${r}=${w.replicaUrls[r]}`, '--json']);
    for (const r of ['a', 'late']) {
      const v = await verify(r);
      expect(v.code, v.stdout + v.stderr).toBe(0);
      expect(JSON.parse(v.stdout).equal).toBe(true);
    }
    // verify sees a difference in a zero-column table too: one row more on the replica.
    await w.replicas.withClient('replica_late', (c) => c.query('INSERT INTO nocols DEFAULT VALUES'));
    const differs = await verify('late');
    expect(differs.code, differs.stdout + differs.stderr).toBe(1);
    expect(JSON.parse(differs.stdout).equal).toBe(false);
  });
});
