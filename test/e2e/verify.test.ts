import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import { cli, createWorld, startUp, upArgs, waitForEqual, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';
import { AUDIT_SCHEMA, AUDIT_TABLES, Workload } from '../helpers/workload';

/**
 * `pgferry verify` compares by content and names the differing keys; on a
 * busy source, lag is not reported as a difference. `replica sync-sequences`
 * raises the replica's sequences to the source's.
 */
const SCHEMA = `
  ${AUDIT_SCHEMA}
  CREATE TABLE items (id int PRIMARY KEY, v text, at timestamptz);
  CREATE TABLE nokey (a int, b text);
  ALTER TABLE nokey REPLICA IDENTITY FULL;
  CREATE TABLE "Odd ""Name""" (k text PRIMARY KEY, n serial);
`;
const TABLES = ['items', 'nokey', '"Odd ""Name"""'];

describe('verify and sync-sequences', () => {
  let w: World;
  let up: Proc;
  const verify = (extra: string[] = []) => cli(w, ['verify', 'a', '--source', w.sourceUrl, '--replica', `a=${w.replicaUrls.a}`, ...extra]);

  beforeAll(async () => {
    // Different time zones on the two servers: timestamptz must still compare equal.
    w = await createWorld({ replicas: ['a'], schema: SCHEMA, sourceSettings: { TimeZone: "'Asia/Tokyo'" }, replicaSettings: { TimeZone: "'America/Lima'" } });
    up = await startUp(w);
    await w.source.withClient('app', (c) =>
      c.query(`INSERT INTO items SELECT g, 'v' || g, now() FROM generate_series(1, 5000) g;
               INSERT INTO nokey VALUES (1, 'a'), (1, 'a'), (2, NULL);
               INSERT INTO "Odd ""Name""" (k) SELECT 'k' || g FROM generate_series(1, 30) g;`),
    );
    await waitForEqual(w, 'a', TABLES);
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  it('reports equal databases as equal (exit 0)', async () => {
    const r = await verify();
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/public\.items\s+5000\s+5000\s+equal/);
    expect(r.stdout).toContain(`replica 'a' equals the source`);
  });

  it('names exactly the keys that differ after rows are altered on the replica by hand (exit 1)', async () => {
    await w.replicas.withClient('replica_a', (c) =>
      c.query(`UPDATE items SET v = 'tampered' WHERE id = 4321;
               DELETE FROM items WHERE id = 17;
               INSERT INTO items VALUES (9999, 'stray', now());
               DELETE FROM nokey WHERE ctid = (SELECT ctid FROM nokey WHERE a = 1 LIMIT 1);`),
    );
    const r = await verify(['--json']);
    expect(r.code).toBe(1);
    const v = JSON.parse(r.stdout);
    expect(v.equal).toBe(false);
    const items = v.tables.find((t: { table: string }) => t.table === 'public.items');
    expect(items).toMatchObject({ missing: ['(17)'], extra: ['(9999)'], changed: ['(4321)'], sourceRows: 5000, replicaRows: 5000 });
    const nokey = v.tables.find((t: { table: string }) => t.table === 'public.nokey');
    expect(nokey.changed).toEqual(['(1,a)']); // one of two identical rows is gone
    expect(v.tables.find((t: { table: string }) => t.table === 'public."Odd ""Name"""')).toMatchObject({ missing: [], extra: [], changed: [] });

    const human = await verify();
    expect(human.stdout).toContain('public.items: missing on the replica: (17)');
    expect(human.stdout).toContain('public.items: only on the replica: (9999)');
    expect(human.stdout).toContain('public.items: different on the replica: (4321)');
    expect(human.stdout).toContain(`replica 'a' differs from the source in 2 table(s)`);

    // Repair by hand, so the next test starts equal.
    await w.replicas.withClient('replica_a', (c) =>
      c.query(`UPDATE items SET v = 'v4321' WHERE id = 4321;
               INSERT INTO items SELECT 17, 'v17', at FROM items WHERE id = 16; -- one INSERT gave every row the same now()
               DELETE FROM items WHERE id = 9999;
               INSERT INTO nokey VALUES (1, 'a');`),
    );
    await waitForEqual(w, 'a', TABLES);
  });

  it('does not report lag as a difference on a busy source', async () => {
    const workload = new Workload(w.sourceUrl, 2); // hundreds of transactions a second, hot counter rows
    workload.start();
    try {
      for (let i = 0; i < 2; i++) {
        const r = await verify(['--tables', AUDIT_TABLES.join(','), '--json']);
        const v = JSON.parse(r.stdout);
        const summary = v.tables.map((t: Record<string, string[]>) => `${t.table}: ${t.missing.length} missing, ${t.extra.length} extra, ${t.changed.length} changed`);
        expect(r.code, summary.join('; ')).toBe(0);
        expect(v.equal).toBe(true);
      }
      expect(workload.committed).toBeGreaterThan(100); // it really was busy
    } finally {
      await workload.stop();
    }
  });

  it('sync-sequences leaves every replica sequence at or above the source', async () => {
    await w.source.withClient('app', (c) => c.query(`SELECT setval('events_id_seq', 777777); SELECT setval('"Odd ""Name""_n_seq"', 4242)`));
    const r = await cli(w, ['replica', 'sync-sequences', 'a', '--source', w.sourceUrl, '--replica', `a=${w.replicaUrls.a}`]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/sequence\(s\) at or above the source/);
    const read = (cluster: typeof w.source, db: string) =>
      cluster.withClient(db, async (c) => (await c.query(`SELECT schemaname || '.' || sequencename AS s, last_value FROM pg_sequences ORDER BY 1`)).rows);
    const [src, dst] = await Promise.all([read(w.source, 'app'), read(w.replicas, 'replica_a')]);
    for (const s of src) {
      const d = dst.find((x) => x.s === s.s);
      expect(d, s.s).toBeDefined();
      if (s.last_value !== null) expect(BigInt(d!.last_value), s.s).toBeGreaterThanOrEqual(BigInt(s.last_value));
    }
    // Never lowered: a replica sequence already ahead stays ahead.
    await w.replicas.withClient('replica_a', (c) => c.query(`SELECT setval('events_id_seq', 999999)`));
    await cli(w, ['replica', 'sync-sequences', 'a', '--source', w.sourceUrl, '--replica', `a=${w.replicaUrls.a}`]);
    const after = await w.replicas.withClient('replica_a', async (c) => (await c.query(`SELECT last_value FROM pg_sequences WHERE sequencename = 'events_id_seq'`)).rows[0]);
    expect(after.last_value).toBe('999999');
  });
});

/**
 * Issue 26.9: in trigger mode a position is <tick>/<rank>. verify's
 * catch-up point for the tick it makes was <tick>/0, which the replica
 * passes with the tick's first transaction: the rest of the tick was then
 * read as differences. Under a steady load every round of every run must
 * find the replica equal.
 */
describe('verify in trigger mode on a busy source', () => {
  let w: World;
  let up: Proc;
  const verify = (extra: string[] = []) => cli(w, ['verify', 'a', '--source', w.sourceUrl, '--replica', `a=${w.replicaUrls.a}`, ...extra]);

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a'], schema: AUDIT_SCHEMA, sourceSettings: { wal_level: 'replica' } });
    Object.assign(w.env, { PGFERRY_CAPTURE_MODE: 'trigger' });
    up = await startUp(w, upArgs(w, ['--mode', 'trigger']));
    await waitForEqual(w, 'a', AUDIT_TABLES);
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  it('does not report lag as a difference', async () => {
    const workload = new Workload(w.sourceUrl, 0); // as fast as it goes: ticks of many transactions
    workload.start();
    try {
      await waitFor('the workload to run', () => workload.committed > 200, 60_000);
      for (let i = 0; i < 4; i++) {
        const r = await verify(['--tables', AUDIT_TABLES.join(','), '--json']);
        const v = JSON.parse(r.stdout);
        const summary = v.tables.map((t: Record<string, string[]>) => `${t.table}: ${t.missing.length} missing, ${t.extra.length} extra, ${t.changed.length} changed`);
        expect(r.code, `run ${i}: ${summary.join('; ')}`).toBe(0);
        expect(v.equal).toBe(true);
      }
    } finally {
      await workload.stop();
    }
    await waitForEqual(w, 'a', AUDIT_TABLES);
  });
});
