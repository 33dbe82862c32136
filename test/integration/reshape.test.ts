/**
 * Resync's reshaping (src/snapshot/reshape.ts) against a real PostgreSQL,
 * in one transaction as the swap runs it: an inheritance parent and child
 * that both lag the source (a change to the parent reaches the child, so the
 * child is planned after it, whatever order the tables come in); a
 * type change with no cast between the types; and a refusal (a view on a
 * column to drop) that names the table and leaves everything as it was.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runReshapes } from '../../src/snapshot/reshape';
import type { TableRef } from '../../src/tables';
import { PgCluster } from '../helpers/pg-cluster';

describe('runReshapes', () => {
  let cluster: PgCluster;
  let c: pg.Client;
  beforeAll(async () => {
    cluster = await PgCluster.start({ wal_level: 'replica' });
    c = new pg.Client({ connectionString: await cluster.createDatabase('r') });
    await c.connect();
  });
  afterAll(async () => {
    await c?.end();
    cluster?.destroy();
  });

  const columns = async (table: string) =>
    (await c.query(`SELECT attname || ' ' || format_type(atttypid, atttypmod) AS col FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, [table])).rows.map((r) => r.col);
  const ref = (table: string, cols: [string, string][]): TableRef => ({ schema: 'public', table, columns: cols.map(([name, type]) => ({ name, type })) });

  it('brings an inheritance parent and its child to the source columns, the child after the parent, in any order given', async () => {
    await c.query(`CREATE TABLE parent (id int PRIMARY KEY, gone text, n int, j int); CREATE TABLE child (extra text) INHERITS (parent)`);
    // On the source: DROP COLUMN gone, n int → bigint, j int → jsonb (no cast), ADD COLUMN added — on the parent, reaching the child.
    const parent = ref('parent', [['id', 'integer'], ['n', 'bigint'], ['j', 'jsonb'], ['added', 'text']]);
    const child = ref('child', [['id', 'integer'], ['n', 'bigint'], ['j', 'jsonb'], ['extra', 'text'], ['added', 'text']]);
    const source = new Map([
      ['public.parent', new Set(['id', 'n', 'j', 'added'])],
      ['public.child', new Set(['id', 'n', 'j', 'extra', 'added'])],
    ]);
    await c.query('BEGIN');
    const said = await runReshapes(c, 'a', [child, parent], source);
    await c.query('COMMIT');
    expect(said).toEqual(['public.parent: column gone dropped, column n type integer → bigint, column j type integer → jsonb, column added added']);
    expect(await columns('parent')).toEqual(['id integer', 'n bigint', 'j jsonb', 'added text']);
    expect(await columns('child')).toEqual(['id integer', 'n bigint', 'j jsonb', 'extra text', 'added text']);
  });

  it('a view on a column to drop fails naming the table, the step and the view; the transaction rolls back whole', async () => {
    await c.query(`CREATE TABLE items (id int PRIMARY KEY, note text, qty int); CREATE VIEW items_v AS SELECT id, note FROM items`);
    await c.query(`CREATE TABLE other (id int PRIMARY KEY, old text)`);
    const source = new Map([
      ['public.other', new Set(['id'])],
      ['public.items', new Set(['id', 'qty'])],
    ]);
    await c.query('BEGIN');
    const err = await runReshapes(c, 'a', [ref('other', [['id', 'integer']]), ref('items', [['id', 'integer'], ['qty', 'bigint']])], source).catch((e: Error) => e);
    await c.query('ROLLBACK');
    expect((err as Error).name).toBe('SchemaMismatchError');
    expect((err as Error).message).toMatch(
      /^replica 'a': resync cannot reshape table public\.items to the source's columns \(drop column note: cannot drop column note of table items because other objects depend on it \[2BP01\]: view items_v depends on column note of table items\); nothing was changed: .*then run pgferry replica resync a again$/,
    );
    expect(await columns('other')).toEqual(['id integer', 'old text']);
    expect(await columns('items')).toEqual(['id integer', 'note text', 'qty integer']);
  });
});
