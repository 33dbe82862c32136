import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import { cli, createWorld, startUp, upArgs, waitForEqual, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';

/**
 * Key shapes that move (issue 26, item 3), in both capture modes: keys
 * shifted and swapped by one statement on a DEFERRABLE primary key (its
 * intermediate states repeat a key), a key swap through a temporary value
 * on an ordinary key, a replica identity index whose columns are updated,
 * REPLICA IDENTITY FULL and keyless tables holding identical rows, and
 * shifts and swaps spread over several transactions that one apply batch
 * takes together (the replicas paused while they commit). After each step
 * both replicas hold exactly the source's rows.
 *
 * Replica c's copy of kd has an ordinary (immediate) primary key: the
 * intermediate states of the source's deferred key cannot be applied there,
 * and c stops saying so and how to fix it, never diverging.
 *
 * On a WAL source PostgreSQL does not take a deferrable key as the replica
 * identity (it refuses UPDATE and DELETE of such a table while it is
 * published), nor a table without a key: those two run with REPLICA
 * IDENTITY FULL, as pgferry's start-up warning tells an operator to do.
 */
const SCHEMA = `
  CREATE TABLE kd (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, v text);
  CREATE TABLE s (id int PRIMARY KEY, v text);
  CREATE TABLE ri (id int PRIMARY KEY, a int NOT NULL, b text NOT NULL, v text);
  CREATE UNIQUE INDEX ri_ab ON ri (a, b);
  ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_ab;
  CREATE TABLE fu (a int, b text);
  ALTER TABLE fu REPLICA IDENTITY FULL;
  CREATE TABLE nk (a int, b text);
  CREATE TABLE w (id int PRIMARY KEY, v text);
`;
const TABLES = ['kd', 's', 'ri', 'fu', 'nk', 'w'];
const MODES = [
  { mode: 'wal', sourceExtra: `ALTER TABLE kd REPLICA IDENTITY FULL; ALTER TABLE nk REPLICA IDENTITY FULL;` },
  { mode: 'trigger', sourceExtra: '' },
];

describe.each(MODES)('key shapes that move ($mode capture)', ({ mode, sourceExtra }) => {
  let w: World;
  let up: Proc;
  const both = () => Promise.all([waitForEqual(w, 'a', TABLES), waitForEqual(w, 'b', TABLES)]);
  const src = (...sql: string[]) =>
    w.source.withClient('app', async (c) => {
      for (const q of sql) await c.query(q);
    });
  /** Run `sql` with replicas a and b paused, so one apply batch (one net-change window) takes it all. */
  const inOneBatch = async (...sql: string[]) => {
    for (const r of ['a', 'b']) expect((await cli(w, ['replica', 'pause', r])).code).toBe(0);
    for (const r of ['a', 'b']) {
      await waitFor(`replica ${r} to be paused`, async () => JSON.parse((await cli(w, ['replica', 'status', r, '--json'])).stdout).state === 'paused');
    }
    await src(...sql);
    for (const r of ['a', 'b']) expect((await cli(w, ['replica', 'resume', r])).code).toBe(0);
  };

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a', 'b', 'c'], schema: SCHEMA });
    if (sourceExtra) await src(sourceExtra);
    // Replica c: kd's key is checked at each row, not at commit.
    await w.replicas.withClient('replica_c', (c) => c.query('ALTER TABLE kd DROP CONSTRAINT kd_pkey, ADD PRIMARY KEY (id)'));
    Object.assign(w.env, { PGFERRY_CAPTURE_MODE: mode }); // for status commands
    up = await startUp(w, upArgs(w, ['--mode', mode]));
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  it('a deferrable key shifted, mirrored and swapped in one batch (the reported recipe)', async () => {
    await src(`INSERT INTO kd SELECT g, 'v' || g FROM generate_series(1, 2000) g`);
    await both();
    await inOneBatch(`UPDATE kd SET id = id + 1`, `UPDATE kd SET id = 2002 - id`, `UPDATE kd SET id = 3 - id WHERE id IN (1, 2)`);
    await both();
  });

  it('a deferrable key shifted, mirrored and swapped, one transaction per batch', async () => {
    await src(`UPDATE kd SET id = id + 1`);
    await both();
    await src(`UPDATE kd SET id = 2002 - id`);
    await both();
    await src(`UPDATE kd SET id = 3 - id WHERE id IN (1, 2)`);
    await both();
    // Two statements whose states in between repeat keys 6..15: 1..10 up by five, then the rows this
    // transaction moved to 11..15 down to 1..5 (rows 1..5 and 6..10 trade places).
    await src(`BEGIN`, `UPDATE kd SET id = id + 5 WHERE id <= 10`, `UPDATE kd SET id = id - 10 WHERE id BETWEEN 11 AND 15 AND xmin::text = pg_current_xact_id()::text`, `COMMIT`);
    await both();
  });

  it('stops replica c, whose key is not deferrable, naming the cause and the fix', async () => {
    const state = await waitFor('replica c to stop', async () => {
      const v = JSON.parse((await cli(w, ['replica', 'status', 'c', '--json'])).stdout);
      return v.state === 'failed' ? v : null;
    });
    expect(state.lastError).toMatch(/kd/);
    expect(state.lastError).toMatch(/DEFERRABLE/);
  });

  it('an ordinary key swapped through a temporary value in one transaction', async () => {
    await src(`INSERT INTO s SELECT g, 's' || g FROM generate_series(1, 100) g`);
    await both();
    await src(`BEGIN`, `UPDATE s SET id = -1 WHERE id = 1`, `UPDATE s SET id = 1 WHERE id = 2`, `UPDATE s SET id = 2 WHERE id = -1`, `COMMIT`);
    await both();
    await src(`UPDATE s SET id = id + 1000 WHERE id > 50`);
    await both();
  });

  it('a replica identity index whose columns are updated', async () => {
    await src(`INSERT INTO ri SELECT g, g % 10, 'b' || g, 'v' || g FROM generate_series(1, 100) g`);
    await both();
    await src(`UPDATE ri SET a = a + 1`);
    await both();
    await src(`BEGIN`, `UPDATE ri SET b = 'tmp' WHERE id = 1`, `UPDATE ri SET b = 'b1', a = 2 WHERE id = 2`, `UPDATE ri SET b = 'b2', a = 3 WHERE id = 1`, `COMMIT`);
    await both();
    await src(`UPDATE ri SET v = 'changed' WHERE a = 5`, `DELETE FROM ri WHERE a = 6`);
    await both();
  });

  it('REPLICA IDENTITY FULL and keyless tables with identical rows: one of two updated, one deleted', async () => {
    for (const t of ['fu', 'nk']) {
      await src(`INSERT INTO ${t} VALUES (1, 'x'), (1, 'x'), (1, 'x'), (2, 'y'), (NULL, NULL), (NULL, NULL)`);
      await both();
      await src(`UPDATE ${t} SET b = 'z' WHERE ctid = (SELECT ctid FROM ${t} WHERE a = 1 LIMIT 1)`);
      await both();
      await src(`DELETE FROM ${t} WHERE ctid = (SELECT ctid FROM ${t} WHERE a = 1 AND b = 'x' LIMIT 1)`);
      await both();
      await src(`UPDATE ${t} SET a = 3 WHERE ctid = (SELECT ctid FROM ${t} WHERE a IS NULL LIMIT 1)`);
      await both();
    }
  });

  it('key shifts and swaps over several transactions in one batch', async () => {
    await src(`INSERT INTO w SELECT g, 'w' || g FROM generate_series(1, 60) g`);
    await both();
    await inOneBatch(
      // A swap of 1 and 2 through 100, one move per transaction.
      `UPDATE w SET id = 100 WHERE id = 1`,
      `UPDATE w SET id = 1 WHERE id = 2`,
      `UPDATE w SET id = 2 WHERE id = 100`,
      // A shift up by one of 50..60, highest first (each row's new key free at its turn), one transaction.
      `DO $$ BEGIN FOR i IN REVERSE 60..50 LOOP UPDATE w SET id = i + 1 WHERE id = i; END LOOP; END $$`,
      // And back down, one transaction per row.
      ...Array.from({ length: 11 }, (_, i) => `UPDATE w SET id = ${50 + i} WHERE id = ${51 + i}`),
      // A cycle 30 → 31 → 32 → 30 through -30, spread over transactions, touched again after.
      `UPDATE w SET id = -30 WHERE id = 30`,
      `BEGIN; UPDATE w SET id = 30 WHERE id = 32; UPDATE w SET id = 32 WHERE id = 31; COMMIT`,
      `UPDATE w SET id = 31 WHERE id = -30`,
      `UPDATE w SET v = 'after the cycle' WHERE id IN (30, 31, 32)`,
      // A key deleted, another moved into its place, the freed key inserted again.
      `DELETE FROM w WHERE id = 40`,
      `UPDATE w SET id = 40 WHERE id = 41`,
      `INSERT INTO w VALUES (41, 'new 41')`,
      `UPDATE w SET id = 100, v = 'moved twice' WHERE id = 40`,
      `INSERT INTO w VALUES (40, 'new 40')`,
    );
    await both();
  });

  it('replica add --create-tables gives the replica a deferrable key where the source has one', async () => {
    const url = await w.replicas.createDatabase('replica_made'); // empty: --create-tables makes every table
    const add = await cli(w, ['replica', 'add', 'made', '--snapshot', '--create-tables', '--source', w.sourceUrl, '--replica', `made=${url}`, '--mode', mode]);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    const keys = await w.replicas.withClient('replica_made', (c) =>
      c.query(`SELECT conrelid::regclass::text AS t, condeferrable, condeferred FROM pg_constraint WHERE contype = 'p' AND conrelid IN ('kd'::regclass, 's'::regclass) ORDER BY 1`),
    );
    const yes = (v: unknown) => v === true || v === 't';
    expect(keys.rows.map((r) => [r.t, yes(r.condeferrable), yes(r.condeferred)])).toEqual([
      ['kd', true, true],
      ['s', false, false],
    ]);
  });
});
