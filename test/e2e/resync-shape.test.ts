import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import type { PgCluster } from '../helpers/pg-cluster';
import { cli, createWorld, deleteStream, startUp, upArgs, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';

/**
 * Issue 26 follow-up (chaos seed 266001, WAL capture, ddl+stream): the
 * change stream is deleted while a paused replica has not yet taken schema
 * changes the source made (RENAME TABLE, ADD/DROP/RENAME COLUMN, int →
 * bigint, varchar → text, CREATE TABLE). The replica goes to needs_resync;
 * `replica resync` must then bring each table's shape in line with the
 * source's as part of the rebuild — creating what is missing, altering what
 * differs, keeping the tables' own indexes and views — and leave a table
 * under its old name as it is, saying so. Something it cannot do (a view of
 * the replica's own on a column to drop) fails the resync naming the table,
 * the cause and the fix, and changes nothing. Afterwards the replica equals
 * the source table by table (columns and content, by name) and keeps
 * streaming. The source is FOR ALL TABLES (no tables configured).
 */
const SCHEMA = `
  CREATE TABLE ddl_t (id int PRIMARY KEY, a int, b varchar(20));
  CREATE TABLE shape (id int PRIMARY KEY, n int, s varchar(10), gone text, old_name text);
  CREATE TABLE keep (id int PRIMARY KEY, v text);
`;
const TABLES = ['ddl_t_r', 'shape', 'keep', 'fresh'];

/** A table's columns (name and type, by name) and rows (as JSON keyed by column name, sorted): equal by name, whatever the column order. */
async function shapeAndRows(cluster: PgCluster, db: string, table: string): Promise<{ columns: string[]; rows: string[] } | null> {
  return cluster.withClient(db, async (c) => {
    const { rows: cols } = await c.query(
      `SELECT a.attname || ' ' || format_type(a.atttypid, a.atttypmod) AS col FROM pg_attribute a
       WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attname`,
      [`public.${table}`],
    );
    if (!cols.length) return null;
    const { rows } = await c.query(`SELECT to_jsonb(t)::text AS r FROM public.${table} t ORDER BY 1`);
    return { columns: cols.map((r) => r.col), rows: rows.map((r) => r.r) };
  });
}

describe('replica resync of a replica whose schema lags the source', () => {
  let w: World;
  let up: Proc;

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a'], schema: SCHEMA });
    // The replica's own objects: an index and a view on a table resync reshapes (kept), and an index on the renamed table.
    await w.replicas.withClient('replica_a', (c) => c.query(`CREATE INDEX shape_n_idx ON shape (n); CREATE VIEW shape_ids AS SELECT id FROM shape`));
    up = await startUp(w, upArgs(w));
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  const sql = (text: string) => w.source.withClient('app', (c) => c.query(text));
  const onReplica = (text: string) => w.replicas.withClient('replica_a', (c) => c.query(text));
  const status = async () => JSON.parse((await cli(w, ['replica', 'status', 'a', '--json'])).stdout);
  const resync = () => cli(w, ['replica', 'resync', 'a', '--source', w.sourceUrl, '--replica', `a=${w.replicaUrls.a}`]);
  const equal = (tables: string[]) =>
    waitFor(
      `replica 'a' to equal the source in ${tables.join(', ')} (columns and rows)`,
      async () => {
        for (const t of tables) {
          const [src, dst] = await Promise.all([shapeAndRows(w.source, 'app', t), shapeAndRows(w.replicas, 'replica_a', t)]);
          if (JSON.stringify(src) !== JSON.stringify(dst)) throw new Error(`${t}: source ${JSON.stringify(src)}, replica ${JSON.stringify(dst)}`);
        }
        return true;
      },
      120_000,
      500,
    );

  it('goes to needs_resync having missed the schema changes', async () => {
    await sql(`INSERT INTO ddl_t SELECT g, g, 'b' || g FROM generate_series(1, 20) g`);
    await sql(`INSERT INTO shape SELECT g, g, 's' || g, 'gone' || g, 'old' || g FROM generate_series(1, 20) g`);
    await sql(`INSERT INTO keep SELECT g, 'k' || g FROM generate_series(1, 20) g`);
    await equal(['ddl_t', 'shape', 'keep']);

    expect((await cli(w, ['replica', 'pause', 'a'])).code).toBe(0);
    await waitFor('a to be paused', async () => (await status()).state === 'paused');
    await sql(`ALTER TABLE ddl_t RENAME TO ddl_t_r`);
    await sql(`ALTER TABLE shape ADD COLUMN added text`);
    await sql(`ALTER TABLE shape DROP COLUMN gone`);
    await sql(`ALTER TABLE shape RENAME COLUMN old_name TO new_name`);
    await sql(`ALTER TABLE shape ALTER COLUMN n TYPE bigint, ALTER COLUMN s TYPE text`);
    await sql(`CREATE TABLE fresh (id int PRIMARY KEY, v text NOT NULL)`);
    await sql(`INSERT INTO fresh SELECT g, 'f' || g FROM generate_series(1, 10) g`);
    await sql(`UPDATE shape SET added = 'x' || id, n = n + 4294967296, s = s || ' now longer than ten' WHERE id <= 10`);
    await sql(`INSERT INTO ddl_t_r VALUES (21, 21, 'renamed')`);
    await sql(`UPDATE keep SET v = 'changed' WHERE id = 1`);

    await deleteStream(w.sourceName);
    expect((await cli(w, ['replica', 'resume', 'a'])).code).toBe(0);
    await sql(`INSERT INTO keep VALUES (21, 'after the stream was deleted')`);
    await waitFor('a to need a resync', async () => (await status()).state === 'needs_resync', 120_000, 500);
  });

  it('a view of the replica own on a column to drop fails the resync, naming table, cause and fix, and changes nothing', async () => {
    await onReplica(`CREATE VIEW gone_v AS SELECT id, gone FROM shape`);
    const r = await resync();
    expect(r.code, r.stdout + r.stderr).not.toBe(0);
    expect(r.stderr).toMatch(/replica 'a': resync cannot reshape table public\.shape to the source's columns \(drop column gone: .*gone_v.*\); .*then run pgferry replica resync a again/);
    // Nothing changed: no table created, no column altered, the old rows still there.
    expect(await shapeAndRows(w.replicas, 'replica_a', 'ddl_t_r')).toBeNull();
    const shape = await shapeAndRows(w.replicas, 'replica_a', 'shape');
    expect(shape?.columns).toEqual(['gone text', 'id integer', 'n integer', 'old_name text', 's character varying(10)']);
    expect(shape?.rows).toHaveLength(20);
    expect((await status()).state).toBe('needs_resync');
    await onReplica(`DROP VIEW gone_v`);
  });

  it('resync brings every table to the source shape, says what it changed, keeps the replica own objects, and the replica streams on', async () => {
    const r = await resync();
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/WARNING replica 'a': table public\.ddl_t is no longer captured \(renamed or dropped on the source\); it was left as it is/);
    const said = /resync a: (.*)/.exec(r.stdout)?.[1] ?? '';
    expect(said).toContain('public.ddl_t_r created');
    expect(said).toContain('public.fresh created');
    expect(said).toMatch(/public\.shape: .*column added added/);
    expect(said).toMatch(/public\.shape: .*column gone dropped/);
    expect(said).toMatch(/public\.shape: .*column old_name dropped/);
    expect(said).toMatch(/public\.shape: .*column new_name added/);
    expect(said).toMatch(/public\.shape: .*column n type integer → bigint/);
    expect(said).toMatch(/public\.shape: .*column s type character varying\(10\) → text/);
    expect(said).not.toContain('public.keep');
    await equal(TABLES);

    // The replica's own objects stay; the table under its old name is left as it was.
    const own = await onReplica(`SELECT to_regclass('public.shape_n_idx') IS NOT NULL AS idx, to_regclass('public.shape_ids') IS NOT NULL AS view, (SELECT count(*) FROM ddl_t)::int AS old_rows`);
    expect(own.rows[0]).toEqual({ idx: true, view: true, old_rows: 20 });

    await waitFor('a to run again', async () => (await status()).state === 'running', 120_000, 500);
    await sql(`INSERT INTO shape (id, n, s, new_name, added) VALUES (30, 8589934592, 'a value longer than ten', 'nn', 'ad')`);
    await sql(`INSERT INTO ddl_t_r VALUES (30, 30, 'after')`);
    await sql(`INSERT INTO fresh VALUES (30, 'after')`);
    await sql(`ALTER TABLE shape ADD COLUMN later int`);
    await sql(`UPDATE shape SET later = id WHERE id > 15`);
    await sql(`DELETE FROM keep WHERE id = 2`);
    await equal(TABLES);
  });
});
