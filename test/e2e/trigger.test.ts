import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import type { Proc } from '../helpers/procs';
import { cli, contentOf, createWorld, progressOf, startUp, upArgs, waitForEqual, World } from '../helpers/fixture';
import { audit, AUDIT_SCHEMA, AUDIT_TABLES, Workload } from '../helpers/workload';
import { waitFor } from '../helpers/wait';

/**
 * Trigger capture, against a source that cannot decode logically
 * (wal_level=replica): the spine's scenarios, commit order across
 * concurrent transactions, writes while capture is down, the change log
 * emptied after confirmation, and uninstall.
 */
const SCHEMA = `
  ${AUDIT_SCHEMA}
  CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text, tags text[], born date, balance numeric(12,2));
  CREATE TABLE kv (k text PRIMARY KEY, v text);
  CREATE TABLE "Odd ""Log""" (a int, b text); -- no key: matched by the whole row
  CREATE TABLE other (id int PRIMARY KEY, n int);
  INSERT INTO kv VALUES ('r', 'initial');
  INSERT INTO other VALUES (1, 0);
`;
const TABLES = ['customers', 'kv', '"Odd ""Log"""', 'other', ...AUDIT_TABLES];

describe('trigger capture mode', () => {
  let w: World;
  let up: Proc;
  const trigger = (extra: string[] = []) => upArgs(w, ['--mode', 'trigger', ...extra]);

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a', 'b'], schema: SCHEMA, sourceSettings: { wal_level: 'replica' } });
    Object.assign(w.env, { PGFERRY_CAPTURE_MODE: 'trigger' }); // for status commands and later starts
    up = await startUp(w, trigger());
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  const src = (sql: string, params: unknown[] = []) => w.source.withClient('app', (c) => c.query(sql, params));
  const logSize = async () => Number((await src('SELECT count(*) AS n FROM pgferry.events')).rows[0].n);

  it('runs on a source with wal_level=replica and replicates inserts, updates, deletes, truncates and awkward values to both replicas', async () => {
    expect((await src('SHOW wal_level')).rows[0].wal_level).toBe('replica');
    await w.source.withClient('app', async (c) => {
      for (let i = 1; i <= 40; i++) {
        await c.query('INSERT INTO customers VALUES ($1, $2, $3, $4, $5, $6)', [i, `name "${i}", \\ (x)`, i % 5 ? `c${i}@x` : null, `{a,"b c",NULL,"q\\"d"}`, '2026-02-28', `${i}.5`]);
      }
      await c.query('BEGIN');
      await c.query(`UPDATE customers SET id = 1000 WHERE id = 1`); // a changed primary key
      await c.query(`DELETE FROM customers WHERE id BETWEEN 30 AND 35`);
      await c.query(`INSERT INTO "Odd ""Log""" VALUES (1, 'dup'), (1, 'dup'), (NULL, NULL)`);
      await c.query('COMMIT');
      await c.query(`DELETE FROM "Odd ""Log""" WHERE ctid = (SELECT ctid FROM "Odd ""Log""" WHERE a = 1 LIMIT 1)`); // one of two identical rows
      await c.query(`UPDATE "Odd ""Log""" SET b = 'was null' WHERE a IS NULL`);
      await c.query(`INSERT INTO other VALUES (2, 2), (3, 3)`);
      await c.query(`TRUNCATE other`);
      await c.query(`INSERT INTO other VALUES (1, 0)`);
    });
    await Promise.all([waitForEqual(w, 'a', TABLES), waitForEqual(w, 'b', TABLES)]);
    await waitFor('the change log to be empty once confirmed', async () => (await logSize()) === 0);
    const status = JSON.parse((await cli(w, ['capture', 'status', '--json'])).stdout);
    expect(status.state).toBe('running');
    await waitFor('capture status to show the change log', async () => {
      const v = JSON.parse((await cli(w, ['capture', 'status', '--json'])).stdout);
      return v.live?.logEvents === 0 ? v : null;
    });
  });

  it('pause holds replica b while a moves; resume brings it back', async () => {
    expect((await cli(w, ['replica', 'pause', 'b'])).code).toBe(0);
    await waitFor('b to be paused', async () => JSON.parse((await cli(w, ['replica', 'status', 'b', '--json'])).stdout).state === 'paused');
    const before = await contentOf(w.replicas, 'replica_b', TABLES);
    await src(`INSERT INTO customers SELECT g, 'bulk', NULL, NULL, NULL, g FROM generate_series(2000, 2499) g`);
    await waitForEqual(w, 'a', TABLES);
    expect(await contentOf(w.replicas, 'replica_b', TABLES)).toEqual(before);
    expect((await cli(w, ['replica', 'resume', 'b'])).code).toBe(0);
    await waitForEqual(w, 'b', TABLES);
  });

  it('publishes in commit order: a transaction that began first but committed last comes last; writes made while capture is down arrive', async () => {
    await up.stop(); // capture down: both transactions land in one batch, where only commit order can tell them apart
    const first = new pg.Client({ connectionString: w.sourceUrl });
    const second = new pg.Client({ connectionString: w.sourceUrl });
    await first.connect();
    await second.connect();
    try {
      await first.query('BEGIN');
      const firstTxid = BigInt((await first.query('UPDATE other SET n = n + 1 WHERE id = 1 RETURNING pg_current_xact_id()::text AS t')).rows[0].t);
      await second.query('BEGIN');
      const secondTxid = BigInt((await second.query(`UPDATE kv SET v = 'second' WHERE k = 'r' RETURNING pg_current_xact_id()::text AS t`)).rows[0].t);
      await second.query('COMMIT'); // commits first
      await first.query(`UPDATE kv SET v = 'first, committed last' WHERE k = 'r'`); // waits for nothing now: second is done
      await first.query('COMMIT');
      // Ordering by transaction id (or by first event) would apply `first` before `second` and end with 'second'.
      expect(firstTxid < secondTxid).toBe(true);
    } finally {
      await first.end();
      await second.end();
    }
    await src(`INSERT INTO customers VALUES (5000, 'written while capture was down', NULL, NULL, NULL, 1)`);
    expect(await logSize()).toBeGreaterThan(0); // kept on the source until confirmed

    up = await startUp(w, trigger());
    await Promise.all([waitForEqual(w, 'a', TABLES), waitForEqual(w, 'b', TABLES)]);
    const kv = await contentOf(w.replicas, 'replica_a', ['kv']);
    expect(kv.kv).toEqual(['(r,"first, committed last")']);
    await waitFor('the change log to be empty again', async () => (await logSize()) === 0);
  });

  it('kill -9 of the process under a write workload: nothing lost or doubled', async () => {
    const load = new Workload(w.sourceUrl);
    load.start();
    await waitFor('replica a to apply some of the workload', async () => Number((await progressOf(w, 'a'))?.txns_applied ?? 0) > 300, 60_000);
    await up.kill9();
    const atKill = load.committed;
    await waitFor('more writes while pgferry is down', async () => load.committed > atKill + 200, 30_000);
    up = await startUp(w, trigger());
    await waitFor('writes after the restart', async () => load.committed > atKill + 600, 60_000);
    const total = await load.stop();
    await Promise.all([waitForEqual(w, 'a', TABLES, 180_000), waitForEqual(w, 'b', TABLES, 180_000)]);
    for (const r of ['a', 'b']) {
      expect(await w.replicas.withClient(`replica_${r}`, audit), `audit of ${r}`).toEqual({ rows: total, distinct: total });
    }
    console.log(`trigger mode, kill -9 of up: ${total} source transactions, killed after ${atKill}; both replicas equal, audit clean`);
  });

  it('replica add --snapshot under a write workload: the copy and the change log meet without a gap or a double', async () => {
    await src(`INSERT INTO customers SELECT g, 'many', NULL, NULL, NULL, g FROM generate_series(10000, 109999) g`);
    const lateUrl = await w.replicas.createDatabase('replica_late');
    const load = new Workload(w.sourceUrl, 1);
    load.start();
    try {
      await waitFor('the workload to be under way', async () => load.committed > 50);
      const add = await cli(w, ['replica', 'add', 'late', '--snapshot', '--create-tables', '--source', w.sourceUrl, '--replica', `late=${lateUrl}`]);
      expect(add.code, add.stdout + add.stderr).toBe(0);
      expect(add.stdout).toMatch(/snapshot of source '\w+' at [0-9A-F]+\/FFFFFFFF: copied \d+ table\(s\)/);
      await up.stop();
      w.replicaUrls.late = lateUrl;
      up = await startUp(w, trigger());
      const at = load.committed;
      await waitFor('writes after the restart', async () => load.committed > at + 100);
    } finally {
      await load.stop();
    }
    await waitForEqual(w, 'late', TABLES, 180_000);
    const total = (await w.source.withClient('app', audit)).rows;
    expect(await w.replicas.withClient('replica_late', audit)).toEqual({ rows: total, distinct: total });
  });

  it('init again with other --tables adds and removes capture triggers', async () => {
    const captured = async () =>
      (await src(`SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE t.tgname = 'pgferry_capture' ORDER BY 1`)).rows.map((r) => r.relname);
    const all = await captured();
    expect(all).toEqual(['Odd "Log"', 'audit', 'counters', 'customers', 'events', 'kv', 'other']);
    const some = await cli(w, ['init', '--mode', 'trigger', '--source', w.sourceUrl, '--tables', 'customers,kv']);
    expect(some.code, some.stdout + some.stderr).toBe(0);
    expect(await captured()).toEqual(['customers', 'kv']);
    expect((await cli(w, ['init', '--mode', 'trigger', '--source', w.sourceUrl])).code).toBe(0);
    expect(await captured()).toEqual(all);
  });

  it('uninstall removes every pgferry object from the source, in trigger and in WAL mode', async () => {
    await up.stop();
    const r = await cli(w, ['uninstall', '--source', w.sourceUrl]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('pgferry: uninstall: pass --yes to confirm');
    const done = await cli(w, ['uninstall', '--yes', '--source', w.sourceUrl]);
    expect(done.code, done.stdout + done.stderr).toBe(0);
    expect(done.stdout).toContain('capture triggers on public.customers');
    expect(done.stdout).toContain('schema pgferry');
    const left = await src(`SELECT
      (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgferry%')::int AS triggers,
      (SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pgferry%')::int AS schemas,
      (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pgferry')::int AS functions,
      (SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pgferry%')::int AS event_triggers`);
    expect(left.rows[0]).toEqual({ triggers: 0, schemas: 0, functions: 0, event_triggers: 0 });

    // WAL mode on a logical-decoding source: slot and publication go.
    const wal = await createWorld({ replicas: [], schema: 'CREATE TABLE t (id int PRIMARY KEY)' });
    try {
      const init = await cli(wal, ['init', '--mode', 'wal', '--source', wal.sourceUrl]);
      expect(init.code, init.stdout + init.stderr).toBe(0);
      const gone = await cli(wal, ['uninstall', '--yes', '--mode', 'wal', '--source', wal.sourceUrl]);
      expect(gone.code, gone.stdout + gone.stderr).toBe(0);
      expect(gone.stdout).toContain(`replication slot pgferry_${wal.sourceName}`);
      expect(gone.stdout).toContain(`publication pgferry_${wal.sourceName}`);
      const rest = await wal.source.withClient('app', (c) =>
        c.query(`SELECT (SELECT count(*) FROM pg_replication_slots)::int AS slots, (SELECT count(*) FROM pg_publication)::int AS pubs,
                        (SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pgferry%')::int AS schemas,
                        (SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pgferry%')::int AS event_triggers`),
      );
      expect(rest.rows[0]).toEqual({ slots: 0, pubs: 0, schemas: 0, event_triggers: 0 });
    } finally {
      await wal.teardown();
    }
  });
});
