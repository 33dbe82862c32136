/**
 * Installable DDL as numbered migrations (src/migrations.ts), against a real
 * PostgreSQL: each applies once, in order, recorded in pgferry.migrations; a
 * database set up before migrations existed takes them as no-ops; two
 * workers migrating at once apply each migration once.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate, migrationNames } from '../../src/migrations';
import { PgCluster } from '../helpers/pg-cluster';

describe('migrations', () => {
  let cluster: PgCluster;
  beforeAll(async () => {
    cluster = await PgCluster.start({ wal_level: 'replica' });
  });
  afterAll(async () => {
    cluster?.destroy();
  });

  const connect = async (url: string) => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    return c;
  };

  it('apply each migration once, in order, and record it', async () => {
    const c = await connect(await cluster.createDatabase('fresh'));
    try {
      expect(migrationNames('target')[0]).toBe('target/0001-bookkeeping');
      expect(await migrate(c, 'target')).toEqual(migrationNames('target'));
      expect(await migrate(c, 'target')).toEqual([]);
      const recorded = (await c.query('SELECT name FROM pgferry.migrations ORDER BY name')).rows.map((r) => r.name);
      expect(recorded).toEqual(migrationNames('target'));
      expect((await c.query(`SELECT to_regclass('pgferry.progress') IS NOT NULL AS ok`)).rows[0].ok).toBe(true);
    } finally {
      await c.end();
    }
  });

  it('a replica set up before migrations existed (its schema made by the old schema.sql) takes them as no-ops, its rows kept', async () => {
    const c = await connect(await cluster.createDatabase('older'));
    try {
      // What earlier versions ran at every start: the same DDL, with no migrations table.
      await c.query('CREATE SCHEMA pgferry');
      await c.query(fs.readFileSync(path.resolve(__dirname, '../../sql/migrations/target/0001-bookkeeping.sql'), 'utf8'));
      await c.query(`INSERT INTO pgferry.progress (replica, source, lsn) VALUES ('r', 'main', '0/10')`);
      expect(await migrate(c, 'target')).toEqual(migrationNames('target'));
      expect((await c.query(`SELECT lsn::text FROM pgferry.progress WHERE replica = 'r'`)).rows[0].lsn).toBe('0/10');
    } finally {
      await c.end();
    }
  });

  it('two workers migrating the same database at once apply each migration once', async () => {
    const url = await cluster.createDatabase('racing');
    const [a, b] = await Promise.all([connect(url), connect(url)]);
    try {
      const [ra, rb] = await Promise.all([migrate(a, 'target'), migrate(b, 'target')]);
      expect([...ra, ...rb].sort()).toEqual(migrationNames('target'));
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  });

  it('source migrations (trigger capture) run inside the caller\'s transaction and vanish with its rollback', async () => {
    const c = await connect(await cluster.createDatabase('src'));
    try {
      await c.query('BEGIN');
      expect(await migrate(c, 'source', { inTransaction: true })).toEqual(migrationNames('source'));
      await c.query('ROLLBACK');
      expect((await c.query(`SELECT to_regclass('pgferry.events') IS NULL AS gone`)).rows[0].gone).toBe(true);
    } finally {
      await c.end();
    }
  });
});
