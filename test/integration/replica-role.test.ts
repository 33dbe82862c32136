/**
 * Apply sessions in replica role (src/apply/session.ts), against a real
 * PostgreSQL: ordinary triggers and foreign-key checks of the replica do not
 * fire on replicated rows, ENABLE ALWAYS triggers and CHECK constraints still
 * do; a role that may not set the parameter gets `false` and advice naming
 * the grant, and the grant makes it work.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replicaRoleAdvice, useReplicaRole } from '../../src/apply/session';
import { PgCluster } from '../helpers/pg-cluster';

describe('apply sessions in replica role', () => {
  let cluster: PgCluster;
  let url: string;
  beforeAll(async () => {
    cluster = await PgCluster.start({ wal_level: 'replica' });
    url = await cluster.createDatabase('replica');
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query(`
      CREATE TABLE parent (id int PRIMARY KEY);
      CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id), n int CHECK (n >= 0));
      CREATE TABLE fired (what text);
      CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO fired VALUES (TG_NAME); RETURN NEW; END $$;
      CREATE TRIGGER ordinary AFTER INSERT ON child FOR EACH ROW EXECUTE FUNCTION note();
      CREATE TRIGGER always_on AFTER INSERT ON child FOR EACH ROW EXECUTE FUNCTION note();
      ALTER TABLE child ENABLE ALWAYS TRIGGER always_on;
      CREATE ROLE plain LOGIN;
      GRANT ALL ON parent, child, fired TO plain;`);
    await c.end();
  });
  afterAll(() => cluster?.destroy());

  const connect = async (user?: string) => {
    const u = new URL(url);
    if (user) u.username = user;
    const c = new pg.Client({ connectionString: u.toString() });
    await c.connect();
    return c;
  };

  it('skips ordinary triggers and FK checks on replicated rows, keeps ALWAYS triggers and CHECK constraints', async () => {
    const c = await connect();
    try {
      expect(await useReplicaRole(c)).toBe(true);
      expect((await c.query('SHOW session_replication_role')).rows[0].session_replication_role).toBe('replica');
      await c.query('INSERT INTO child VALUES (1, 42, 0)'); // parent 42 does not exist: as native apply, no FK check
      expect((await c.query('SELECT what FROM fired ORDER BY what')).rows.map((r) => r.what)).toEqual(['always_on']);
      await expect(c.query('INSERT INTO child VALUES (2, NULL, -1)')).rejects.toThrow(/violates check constraint/);
    } finally {
      await c.end();
    }
  });

  it('a role that may not set it gets false and advice naming the grant; with the grant it may', async () => {
    const c = await connect('plain');
    try {
      expect(await useReplicaRole(c)).toBe(false);
      expect(await useReplicaRole(c)).toBe(false); // asked once per connection
      expect(await replicaRoleAdvice(c, 'r1')).toMatch(/^replica 'r1': apply runs with session_replication_role = origin, because role plain may not set it: .* GRANT SET ON PARAMETER session_replication_role TO "plain"$/);
      // The session is still usable after the refusal.
      expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await c.end();
    }
    const admin = await connect();
    await admin.query('GRANT SET ON PARAMETER session_replication_role TO plain');
    await admin.end();
    const again = await connect('plain');
    try {
      expect(await useReplicaRole(again)).toBe(true);
    } finally {
      await again.end();
    }
  });
});
