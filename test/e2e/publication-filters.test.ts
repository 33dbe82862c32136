import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import { runCli } from '../helpers/procs';
import { cli, createWorld, startUp, upArgs, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';

/**
 * A publication made by the DBA with a column list and a row filter
 * (PostgreSQL 15+) bounds everything pgferry puts on a replica: streaming,
 * `replica add --snapshot` (with --create-tables: the excluded column is not
 * even created), `replica resync`, and what `verify` compares. The excluded
 * column's values (a national id number here) never reach a replica, nor do
 * rows outside the filter.
 */
const SCHEMA = `
  CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, ssn text, active boolean NOT NULL DEFAULT true);
  CREATE TABLE notes (id int PRIMARY KEY, body text);
`;

describe('a publication with a column list and a row filter', () => {
  let w: World;
  let up: Proc;
  let lateUrl: string;
  const sql = (q: string) => w.source.withClient('app', (c) => c.query(q));
  const published = `SELECT id, name, active FROM users WHERE id % 2 = 0 ORDER BY id`;

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a'], schema: SCHEMA });
    // Rows written before pgferry starts: only a snapshot or a resync brings them to replica a.
    await sql(`INSERT INTO users SELECT g, 'user ' || g, 'SSN-' || g, g % 3 <> 0 FROM generate_series(1, 40) g`);
    await sql(`INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 10) g`);
    // The DBA's publication: users without ssn, and only even ids (a filter over the key, as UPDATE/DELETE require).
    await sql(`CREATE PUBLICATION "pgferry_${w.sourceName}" FOR TABLE users (id, name, active) WHERE (id % 2 = 0), notes WITH (publish_via_partition_root = true)`);
    up = await startUp(w);
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  const replicaRows = (db: string, q: string) => w.replicas.withClient(db, async (c) => (await c.query(q)).rows);
  const sourceRows = async (q: string) => w.source.withClient('app', async (c) => (await c.query(q)).rows);

  it('never copies or streams an excluded column or a filtered row, and verify compares what is published', async () => {
    // Streaming: inserts, updates (also into and out of the filter's reach by key), deletes.
    await sql(`INSERT INTO users SELECT g, 'user ' || g, 'SSN-' || g, true FROM generate_series(41, 60) g`);
    await sql(`UPDATE users SET name = name || ' (renamed)', ssn = 'SSN-CHANGED' WHERE id % 5 = 0`);
    await sql(`DELETE FROM users WHERE id IN (2, 3, 44)`);
    await sql(`INSERT INTO notes VALUES (11, 'after start')`);

    // A late replica, filled from a snapshot; its table made by --create-tables.
    lateUrl = await w.replicas.createDatabase('replica_late');
    const add = await runCli(['replica', 'add', 'late', '--snapshot', '--create-tables', '--source', w.sourceUrl, '--replica', `late=${lateUrl}`], w.env, 600_000);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    // The operator adds it to pgferry up, which then streams to it from its snapshot on.
    await up.stop();
    w.replicaUrls.late = lateUrl;
    up = await startUp(w, upArgs(w));
    // Replica a held only what streamed since the start: resync rebuilds it from a snapshot.
    const resync = await runCli(['replica', 'resync', 'a', '--source', w.sourceUrl, '--replica', `a=${w.replicaUrls.a}`], w.env, 600_000);
    expect(resync.code, resync.stdout + resync.stderr).toBe(0);
    await sql(`INSERT INTO users VALUES (62, 'after resync', 'SSN-62', true), (63, 'odd', 'SSN-63', true)`);
    await sql(`UPDATE users SET active = false WHERE id = 62`);

    const expected = await sourceRows(published);
    expect(expected.length).toBeGreaterThan(20);
    for (const db of ['replica_a', 'replica_late']) {
      await waitFor(`${db} to hold exactly the published rows`, async () => JSON.stringify(await replicaRows(db, 'SELECT id, name, active FROM users ORDER BY id')) === JSON.stringify(expected), 120_000);
      expect(await replicaRows(db, 'SELECT id, body FROM notes ORDER BY id')).toEqual(await sourceRows('SELECT id, body FROM notes ORDER BY id'));
    }
    // The excluded column: never filled on a, not even created on late.
    expect(await replicaRows('replica_a', 'SELECT count(*)::int AS n FROM users WHERE ssn IS NOT NULL')).toEqual([{ n: 0 }]);
    expect(await replicaRows('replica_late', `SELECT attname FROM pg_attribute WHERE attrelid = 'users'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`)).toEqual([
      { attname: 'id' },
      { attname: 'name' },
      { attname: 'active' },
    ]);

    for (const [name, url] of [['a', w.replicaUrls.a], ['late', lateUrl]]) {
      const v = await cli(w, ['verify', name, '--source', w.sourceUrl, '--replica', `${name}=${url}`, '--json']);
      expect(v.code, v.stdout + v.stderr).toBe(0);
      const users = JSON.parse(v.stdout).tables.find((t: { table: string }) => t.table === 'public.users');
      expect(users).toMatchObject({ sourceRows: expected.length, replicaRows: expected.length, missing: [], extra: [], changed: [] });
    }
    // And a difference in a published column is still found.
    await w.replicas.withClient('replica_late', (c) => c.query(`UPDATE users SET name = 'altered by hand' WHERE id = 4`));
    const differs = await cli(w, ['verify', 'late', '--source', w.sourceUrl, '--replica', `late=${lateUrl}`]);
    expect(differs.code, differs.stdout + differs.stderr).toBe(1);
  });
});

/**
 * The same bounds set from the config instead of by the DBA
 * (sources[].publish): pgferry creates its publication with the column list
 * and row filter, streaming and resync honour them, verify compares what is
 * published; a column list without the key is refused before anything is
 * changed, and a changed filter in the config changes the publication.
 */
describe('column lists and row filters set in the config', () => {
  let w: World;
  let up: Proc;
  let configFile: string;
  const sql = (q: string) => w.source.withClient('app', (c) => c.query(q));
  const config = (publish: string) => `sources:
  - name: ${w.sourceName}
    url: ${w.sourceUrl}
    tables: [users, notes]
    publish:
${publish}
replicas:
  - name: a
    url: ${w.replicaUrls.a}
`;
  const EVEN = `      users:
        columns: [id, name, active]
        rows: "id % 2 = 0"`;

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a'], schema: SCHEMA });
    await sql(`INSERT INTO users SELECT g, 'user ' || g, 'SSN-' || g, true FROM generate_series(1, 30) g`);
    configFile = `${w.dataDir}/pgferry.yaml`;
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  const replicaRows = (q: string) => w.replicas.withClient('replica_a', async (c) => (await c.query(q)).rows);
  const sourceRows = async (q: string) => w.source.withClient('app', async (c) => (await c.query(q)).rows);

  it('publishes, streams, resyncs and verifies only the configured columns and rows', async () => {
    const fs = await import('node:fs');
    fs.writeFileSync(configFile, config(`      users:\n        columns: [name, active]`));
    const refused = await cli(w, ['init', '--config', configFile]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr + refused.stdout).toMatch(/sources\[\]\.publish\.users\.columns leaves out key column id of public\.users; PostgreSQL would then refuse every UPDATE and DELETE .*: list it too/);
    expect(await sourceRows(`SELECT count(*)::int AS n FROM pg_publication WHERE pubname = 'pgferry_${w.sourceName}'`)).toEqual([{ n: 0 }]);

    fs.writeFileSync(configFile, config(EVEN));
    up = await startUp(w, ['up', '--config', configFile]);
    expect(await sourceRows(`SELECT attnames::text, rowfilter FROM pg_publication_tables WHERE pubname = 'pgferry_${w.sourceName}' AND tablename = 'users'`)).toEqual([
      { attnames: '{id,name,active}', rowfilter: '((id % 2) = 0)' },
    ]);
    await sql(`INSERT INTO users SELECT g, 'user ' || g, 'SSN-' || g, true FROM generate_series(31, 50) g`);
    await sql(`UPDATE users SET name = name || '!', ssn = 'X' WHERE id % 4 = 0`);
    // The rows from before pgferry started come with a resync.
    const resync = await runCli(['replica', 'resync', 'a', '--config', configFile], w.env, 600_000);
    expect(resync.code, resync.stdout + resync.stderr).toBe(0);
    await sql(`DELETE FROM users WHERE id IN (4, 5)`);
    const published = await sourceRows(`SELECT id, name, active FROM users WHERE id % 2 = 0 ORDER BY id`);
    await waitFor('replica a to hold exactly the published rows', async () => JSON.stringify(await replicaRows('SELECT id, name, active FROM users ORDER BY id')) === JSON.stringify(published), 120_000);
    expect(await replicaRows('SELECT count(*)::int AS n FROM users WHERE ssn IS NOT NULL')).toEqual([{ n: 0 }]);
    const v = await cli(w, ['verify', 'a', '--config', configFile, '--json']);
    expect(v.code, v.stdout + v.stderr).toBe(0);

    // A new filter in the config: the publication follows at the next start.
    await up.stop();
    fs.writeFileSync(configFile, config(EVEN.replace('id % 2 = 0', 'id % 2 = 0 AND id > 10')));
    up = await startUp(w, ['up', '--config', configFile]);
    expect(await sourceRows(`SELECT rowfilter FROM pg_publication_tables WHERE pubname = 'pgferry_${w.sourceName}' AND tablename = 'users'`)).toEqual([
      { rowfilter: '(((id % 2) = 0) AND (id > 10))' },
    ]);
  });
});
