import * as path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import { ChangeEvent, HandlerFailedError, runSubscriberWorker, subscribe, subscriberStatusQuery, subscriberWorkflowId, pauseSignal, resumeSignal } from '../../src/index';
import type { Proc } from '../helpers/procs';
import { ROOT, runCli, startCli, startNode } from '../helpers/procs';
import { createWorld, RABBIT_URL, startUp, waitForEqual, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';

/**
 * Applications feeding on the change log (issue 9): subscribers with their
 * own table filters and positions, across kill -9 of their process; from
 * 'beginning' and from 'now'; a handler that keeps failing stops only its
 * subscriber, naming the change, and a fixed one continues from it; the same
 * under Temporal (subscriberWorkflow); and `pgferry tail`.
 *
 * The oracle is the workload itself: the test knows, in commit order, every
 * (table, operation, key) it caused, and compares what each consumer got.
 */
const SCHEMA = `
  CREATE TABLE orders (id int PRIMARY KEY, total numeric(12,2) NOT NULL, note text);
  CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL);`;
const APP_SCHEMA = `
  CREATE SCHEMA app;
  CREATE TABLE seen (seq bigserial PRIMARY KEY, subscriber text NOT NULL, id text NOT NULL, lsn pg_lsn NOT NULL, idx int NOT NULL,
                     tbl text NOT NULL, op text NOT NULL, key text, new text);`;

type Expected = { tbl: string; op: string; key: string };
const exp = (tbl: string, op: string, id: number): Expected => ({ tbl: `public.${tbl}`, op, key: JSON.stringify({ id: String(id) }) });

describe('subscribers and tail', () => {
  let w: World;
  let up: Proc;
  let appUrl: string;
  let app: pg.Pool;
  /** Every change the workload made, in commit order. */
  const done: Expected[] = [];
  const apps: Proc[] = [];

  const sql = (text: string, params: unknown[] = []) => w.source.withClient('app', (c) => c.query(text, params));
  const seen = async (subscriber: string) =>
    (await app.query('SELECT id, lsn::text, idx, tbl, op, key, new FROM seen WHERE subscriber = $1 ORDER BY seq', [subscriber])).rows as {
      id: string; lsn: string; idx: number; tbl: string; op: string; key: string; new: string | null;
    }[];
  const want = (tables: string[], ops?: string[]) => done.filter((e) => tables.includes(e.tbl) && (!ops || ops.includes(e.op)));
  const shape = (rows: { tbl: string; op: string; key: string | null }[]) => rows.map((r) => ({ tbl: r.tbl, op: r.op, key: r.key }));
  /** First delivery of each change, in delivery order. */
  const firstOnly = <T extends { id: string }>(rows: T[]) => rows.filter((r, i) => rows.findIndex((x) => x.id === r.id) === i);

  /** Transaction k of the workload: an order, an update of user 1 or 3, every 10th a delete; user 2 is deleted at k = 20. */
  const txn = async (k: number) => {
    await w.source.withClient('app', async (c) => {
      await c.query('BEGIN');
      await c.query('INSERT INTO orders VALUES ($1, $2, $3)', [100 + k, `${k}.50`, `order ${k}`]);
      done.push(exp('orders', 'insert', 100 + k));
      const u = k % 2 ? 1 : 3;
      await c.query('UPDATE users SET name = $2 WHERE id = $1', [u, `name ${k}`]);
      done.push(exp('users', 'update', u));
      if (k % 10 === 0) {
        const d = await c.query('DELETE FROM orders WHERE id = $1', [100 + k - 5]);
        if (d.rowCount) done.push(exp('orders', 'delete', 100 + k - 5));
      }
      if (k === 20) {
        await c.query('DELETE FROM users WHERE id = 2');
        done.push(exp('users', 'delete', 2));
      }
      await c.query('COMMIT');
    });
  };
  const startApp = async (env: Record<string, string>) => {
    const child = startNode(path.join(ROOT, 'test/helpers/subscriber-app.js'), [], {
      ...w.env,
      SUB_SOURCE: w.sourceName,
      POSITIONS_URL: appUrl,
      PGFERRY_RABBITMQ_URL: RABBIT_URL,
      ...env,
    });
    apps.push(child);
    await waitFor(`subscriber ${env.SUB_NAME} to start`, () => {
      if (child.child.exitCode !== null) throw new Error(`exited: ${child.output()}`);
      return child.output().includes(`subscriber ${env.SUB_NAME} ready`);
    }, 60_000);
    return child;
  };

  beforeAll(async () => {
    w = await createWorld({ replicas: ['r1'], schema: SCHEMA });
    appUrl = await w.replicas.createDatabase('appdb');
    await w.replicas.withClient('appdb', (c) => c.query(APP_SCHEMA));
    app = new pg.Pool({ connectionString: appUrl, max: 2 });
    app.on('error', () => undefined); // its server is restarted by a test
    up = await startUp(w);
    // Before any subscriber exists: five orders and three users, in two transactions.
    await sql(`INSERT INTO orders SELECT g, g, NULL FROM generate_series(1, 5) g`);
    for (let i = 1; i <= 5; i++) done.push(exp('orders', 'insert', i));
    await sql(`INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 3) g`);
    for (let i = 1; i <= 3; i++) done.push(exp('users', 'insert', i));
    await waitForEqual(w, 'r1', ['orders', 'users']);
  });

  afterAll(async () => {
    for (const a of apps) await a.kill9().catch(() => undefined);
    await app?.end();
    await up?.stop();
    await w?.teardown();
  });

  it('two subscribers with their own filters get exactly their changes, in order, across kill -9; from now sees only new ones', async () => {
    // Transactional, whole transactions, orders only: exactly once.
    const env1 = { SUB_NAME: 'orders-app', SUB_TABLES: 'public.orders', SUB_FROM: 'beginning', SUB_TRANSACTIONAL: '1', SUB_DELIVER: 'transaction', SUB_SLOW_MS: '300' };
    // Not transactional, one call per change, users' inserts and updates (not deletes): at least once.
    const env2 = { SUB_NAME: 'users-app', SUB_TABLES: 'users', SUB_OPS: 'insert,update', SUB_FROM: 'beginning', SUB_DELIVER: 'change', SUB_SLOW_MS: '1' };
    let a1 = await startApp(env1);
    let a2 = await startApp(env2);
    // In this process: from 'now', started after the first changes were in the stream.
    const late: ChangeEvent[] = [];
    const lateSub = subscribe({
      name: 'late',
      source: w.sourceName,
      from: 'now',
      rabbitmqUrl: RABBIT_URL,
      position: { url: appUrl },
      deliver: 'change',
      handler: (ev) => {
        late.push(ev);
      },
    });
    await lateSub.ready;
    const beforeLate = done.length;

    for (let k = 1; k <= 30; k++) await txn(k);
    // A transaction of 5000 changes, several chunks in the stream; kill both apps while users-app is inside it.
    await sql(`INSERT INTO users SELECT g, 'bulk ' || g FROM generate_series(1000, 5999) g`);
    for (let i = 1000; i <= 5999; i++) done.push(exp('users', 'insert', i));
    await waitFor('users-app to be inside the 5000-change transaction', async () => (await seen('users-app')).filter((r) => r.key === JSON.stringify({ id: '1500' })).length > 0, 120_000, 50);
    await Promise.all([a1.kill9(), a2.kill9()]);
    // Both were killed mid-stream (orders-app inside a handler's transaction, users-app inside the bulk transaction).
    const atKill = { orders: (await seen('orders-app')).length, bulk: (await seen('users-app')).find((r) => r.key === JSON.stringify({ id: '1000' }))!.lsn };
    expect(atKill.orders).toBeLessThan(want(['public.orders']).length);
    for (let k = 31; k <= 60; k++) await txn(k);
    a1 = await startApp(env1);
    a2 = await startApp(env2);

    const o = want(['public.orders']);
    const u = want(['public.users'], ['insert', 'update']);
    await waitFor('orders-app to have every orders change', async () => (await seen('orders-app')).length >= o.length, 120_000);
    await waitFor('users-app to have every users insert and update', async () => firstOnly(await seen('users-app')).length >= u.length, 180_000);

    // orders-app: exactly once, in order.
    const got1 = await seen('orders-app');
    expect(got1.length).toBe(o.length);
    expect(shape(got1)).toEqual(o);
    // users-app: every change, in order; redelivered ones only from the one transaction in flight at the kill.
    const got2 = await seen('users-app');
    expect(shape(firstOnly(got2))).toEqual(u);
    const dupLsns = new Set(got2.filter((r, i) => got2.findIndex((x) => x.id === r.id) !== i).map((r) => r.lsn));
    expect([...dupLsns]).toEqual([atKill.bulk]);
    // Idempotency keys: <source>/<lsn>/<index>, the same on redelivery; values as PostgreSQL prints them.
    expect(got2[0].id).toBe(`${w.sourceName}/${got2[0].lsn}/${got2[0].idx}`);
    expect(JSON.parse(got1.find((r) => r.key === JSON.stringify({ id: '101' }))!.new!)).toEqual({ id: '101', total: '1.50', note: 'order 1' });

    // from 'now': only what committed after it started, every table and operation.
    await waitFor('late to have every change after its start', () => late.length >= done.length - beforeLate, 60_000);
    expect(late.map(asRow)).toEqual(done.slice(beforeLate));
    const upd = late.find((e) => e.operation === 'update')!;
    expect(upd).toMatchObject({ source: w.sourceName, schema: 'public', table: 'users', key: { id: '1' }, new: { id: '1', name: 'name 1' } });
    expect(upd.commitTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    expect(upd.columns.map((c) => c.type)).toEqual(['integer', 'text']);
    await lateSub.stop();
    await Promise.all([a1.stop(), a2.stop()]);
    // Positions are stored in the table the application chose.
    const positions = (await app.query(`SELECT subscriber, source FROM app."subscriber positions" ORDER BY 1`)).rows;
    expect(positions).toEqual([{ subscriber: 'orders-app', source: w.sourceName }, { subscriber: 'users-app', source: w.sourceName }]);
    await waitForEqual(w, 'r1', ['orders', 'users']);
  });
  it('a handler that keeps failing stops its subscriber, naming the change; the others and the replica go on; fixed, it continues from that change', async () => {
    const common = { source: w.sourceName, from: 'beginning', rabbitmqUrl: RABBIT_URL, position: { url: appUrl }, tables: ['public.orders'], deliver: 'change' as const };
    const steadyGot: ChangeEvent[] = [];
    const steady = subscribe({ ...common, name: 'steady', handler: (ev: ChangeEvent) => void steadyGot.push(ev) });
    const got: ChangeEvent[] = [];
    let broken = true;
    const handler = (ev: ChangeEvent) => {
      if (broken && ev.key?.id === '130') throw new Error('the search index refused document 130');
      got.push(ev);
    };
    const flaky = subscribe({ ...common, name: 'flaky', retry: { maxAttempts: 3, initialDelayMs: 20, maxDelayMs: 100 }, handler });
    const err = await flaky.done.then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(HandlerFailedError);
    expect((err as Error).message).toMatch(
      /^subscriber 'flaky': the handler failed 3 times on insert of public\.orders key \{"id":"130"\} \(change \S+\/\d+, source position [0-9A-F]+\/[0-9A-F]+, committed [^)]+\): the search index refused document 130; fix the handler .*it continues from this change$/,
    );
    const orders = want(['public.orders']);
    const at130 = orders.findIndex((e) => e.op === 'insert' && e.key === JSON.stringify({ id: '130' }));
    expect(shape(got.map(asRow))).toEqual(orders.slice(0, at130));

    // Nothing else stopped: a new transaction reaches the replica and the other subscriber.
    await txn(61);
    await waitForEqual(w, 'r1', ['orders', 'users']);
    await waitFor('steady to get the new order', () => steadyGot.some((e) => e.key?.id === '161'), 60_000);
    expect(shape(steadyGot.map(asRow))).toEqual(want(['public.orders']));

    // Fixed: the same subscriber continues with change 130, and misses nothing after it.
    broken = false;
    const fixed = subscribe({ ...common, name: 'flaky', handler });
    const total = want(['public.orders']).length;
    await waitFor('flaky to catch up after the fix', () => got.length >= total, 60_000);
    expect(shape(got.slice(at130, at130 + 1).map(asRow))).toEqual([exp('orders', 'insert', 130)]);
    expect(shape(got.map(asRow))).toEqual(want(['public.orders']));
    await Promise.all([fixed.stop(), steady.stop()]);
  });

  it('runs as a Temporal workflow: a failing handler leaves it failed with the change named until resume; pause holds delivery', async () => {
    const got: ChangeEvent[] = [];
    let broken = true;
    const worker = await runSubscriberWorker({
      temporal: { address: w.temporal.address },
      rabbitmqUrl: RABBIT_URL,
      batch: { maxWaitMs: 1000 },
      subscribers: [
        {
          name: 'wf_orders',
          source: w.sourceName,
          from: 'beginning',
          tables: ['public.orders'],
          position: { url: appUrl },
          retry: { maxAttempts: 2, initialDelayMs: 100, maxDelayMs: 200 },
          handler: (t) => {
            if (broken && t.changes.some((c) => c.key?.id === '140')) throw new Error('the cache refused order 140');
            got.push(...t.changes);
          },
        },
      ],
    });
    const connection = await Connection.connect({ address: w.temporal.address });
    try {
      const handle = new Client({ connection }).workflow.getHandle(subscriberWorkflowId('wf_orders'));
      const failed = await waitFor('the subscriber workflow to stop in state failed', async () => {
        const s = await handle.query(subscriberStatusQuery);
        return s.state === 'failed' ? s : null;
      }, 90_000);
      expect(failed.lastError).toMatch(/^subscriber 'wf_orders': the handler failed 2 times on transaction .*insert of public\.orders key \{"id":"140"\}.*: the cache refused order 140; fix the handler/);
      const orders = want(['public.orders']);
      const at140 = orders.findIndex((e) => e.op === 'insert' && e.key === JSON.stringify({ id: '140' }));
      expect(shape(got.map(asRow))).toEqual(orders.slice(0, at140));
      // pgferry status shows it like a replica, and a stopped subscriber makes it exit 1.
      const whole = await runCli(['status', '--json'], w.env);
      expect(whole.code).toBe(1);
      const report = JSON.parse(whole.stdout);
      expect(report.subscribers).toEqual([expect.objectContaining({ subscriber: 'wf_orders', source: w.sourceName, state: 'failed' })]);
      expect(report.warnings).toContainEqual(expect.stringMatching(/^subscriber 'wf_orders' is failed: subscriber 'wf_orders': the handler failed 2 times/));

      broken = false;
      await handle.signal(resumeSignal);
      await waitFor('the resumed subscriber to catch up', () => got.length >= orders.length, 60_000);
      expect(shape(got.map(asRow))).toEqual(orders);

      await handle.signal(pauseSignal);
      await waitFor('the subscriber to be paused', async () => (await handle.query(subscriberStatusQuery)).state === 'paused', 60_000);
      await txn(62);
      await waitForEqual(w, 'r1', ['orders', 'users']);
      expect(got.some((e) => e.key?.id === '162')).toBe(false);
      await handle.signal(resumeSignal);
      await waitFor('the subscriber to deliver after resume', () => got.some((e) => e.key?.id === '162'), 60_000);
      expect(shape(got.map(asRow))).toEqual(want(['public.orders']));
      // The status mirrors the positions row as of the last finished batch (the one delivering order 162 ends once the log is idle).
      const s = await waitFor('the status to count every change delivered', async () => {
        const v = await handle.query(subscriberStatusQuery);
        return v.changes >= want(['public.orders']).length ? v : null;
      }, 30_000);
      expect(s).toMatchObject({ subscriber: 'wf_orders', source: w.sourceName, state: 'running', lastError: null });
      expect(s.changes).toBe(want(['public.orders']).length);
      // The same from the command line.
      const cliStatus = await runCli(['subscriber', 'status', 'wf_orders', '--json'], w.env);
      expect(cliStatus.code).toBe(0);
      expect(JSON.parse(cliStatus.stdout)).toMatchObject({ subscriber: 'wf_orders', state: 'running', lsn: s.lsn });
      const unknown = await runCli(['subscriber', 'pause', 'nosuch'], w.env);
      expect(unknown.code).toBe(1);
      expect(unknown.stderr).toMatch(/subscriber 'nosuch' not found \(no running workflow pgferry-subscriber-nosuch\)/);
      const healthy = JSON.parse((await runCli(['status', '--json'], w.env)).stdout);
      expect(healthy.subscribers).toEqual([expect.objectContaining({ subscriber: 'wf_orders', state: 'running', lastError: null })]);

      // Its application's worker goes away: the workflow still runs in Temporal, but nobody answers for it.
      await worker.shutdown();
      const gone = await runCli(['status'], w.env);
      expect(gone.code).toBe(1);
      expect(gone.stdout).toMatch(/^wf_orders\s+\?\s+not answering\s/m);
      expect(gone.stdout).toMatch(/WARNING subscriber 'wf_orders' is not answering: its application's worker \(task queue pgferry-subscriber-wf_orders\) did not answer within 3 s: is it running\?/);
    } finally {
      await connection.close();
      await worker.shutdown();
    }
  });

  it('keeps going across a restart of its positions database, and refuses to run one name in two places at once', async () => {
    const common = { source: w.sourceName, from: 'now', rabbitmqUrl: RABBIT_URL, position: { url: appUrl }, tables: ['public.orders'], deliver: 'change' as const };
    const got: ChangeEvent[] = [];
    const resilient = subscribe({ ...common, name: 'resilient', handler: (ev: ChangeEvent) => void got.push(ev) });
    await resilient.ready;
    // A fast shutdown: connections are cut, committed rows stay (test clusters run with synchronous_commit = off,
    // so an immediate one could lose the positions row itself).
    w.replicas.stop('fast');
    await txn(71);
    w.replicas.start();
    await waitFor('the subscriber to deliver order 171 after the restart', () => got.some((e) => e.key?.id === '171'), 90_000);
    await txn(72);
    await waitFor('and what came after', () => got.some((e) => e.key?.id === '172'), 60_000);
    expect(shape(firstOnly(got.map((e) => ({ ...asRow(e), id: e.id }))))).toEqual([exp('orders', 'insert', 171), exp('orders', 'insert', 172)]);
    const outcome = await Promise.race([resilient.done.then(() => 'stopped', (e: Error) => e.message), new Promise((r) => setTimeout(() => r('running'), 100))]);
    expect(outcome).toBe('running');
    await resilient.stop();

    const twins = [subscribe({ ...common, name: 'twin', handler: () => undefined }), subscribe({ ...common, name: 'twin', handler: () => undefined })];
    await Promise.all(twins.map((t) => t.ready));
    await txn(73);
    const refused = await Promise.race(twins.map((t) => t.done.then(() => null, (e: Error) => e)));
    expect(refused?.message).toMatch(/^subscriber 'twin': its position in pgferry_subscribers moved from \S+ to \S+ under it: another process runs the same subscriber; run each subscriber name in one process only$/);
    await Promise.all(twins.map((t) => t.stop()));
    await waitForEqual(w, 'r1', ['orders', 'users']);
  });
  it('names bad options, a missing stream and an unusable positions table', async () => {
    const base = { name: 'oops', source: w.sourceName, rabbitmqUrl: RABBIT_URL, position: { url: appUrl }, handler: () => undefined };
    expect(() => subscribe({ ...base, position: {}, operations: ['upsert' as never], from: 'yesterday' })).toThrow(
      /^subscriber 'oops': position\.url or position\.pool is required: the database that stores its position; from must be 'now', 'beginning' or an LSN such as 0\/16B3748, not 'yesterday'; operation 'upsert' is not one of insert, update, delete, truncate, schema$/,
    );
    expect(() => subscribe({ ...base, tables: ['public.'] })).toThrow(/^subscriber 'oops': table 'public\.' is not a table name/);
    const noStream = subscribe({ ...base, source: 'nosuch' });
    await expect(noStream.done).rejects.toThrow(/^subscriber 'oops': source 'nosuch' has no change stream \(pgferry\.nosuch\.changes\) in RabbitMQ; start pgferry for that source first/);
    const noSchema = subscribe({ ...base, position: { url: appUrl, table: { schema: 'nosuch', table: 'positions' } } });
    await expect(noSchema.done).rejects.toThrow(/^subscriber 'oops': cannot use the positions table nosuch\.positions: schema "nosuch" does not exist \[3F000\]; grant/);
  });
  it('pgferry tail: JSON lines (filtered, from the beginning, and live from now), human lines, and clear errors', async () => {
    const tail = (args: string[]) => runCli(['tail', '--source', w.sourceName, ...args], w.env);
    const updates = want(['public.users'], ['update']);
    const r = await tail(['--json', '--from', 'beginning', '--tables', 'public.users', '--ops', 'update', '--count', String(updates.length)]);
    expect(r.code).toBe(0);
    const lines: ChangeEvent[] = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(shape(lines.map(asRow))).toEqual(updates);
    expect(new Set(lines.map((l) => l.id)).size).toBe(lines.length);
    expect(lines[0]).toMatchObject({ source: w.sourceName, schema: 'public', table: 'users', operation: 'update', key: { id: '1' }, new: { id: '1', name: 'name 1' } });

    // Live: only what commits after it started.
    const live = startCli(['tail', '--json', '--source', w.sourceName, '--count', '2'], w.env);
    await waitFor('tail to start', () => live.output().includes('tailing source'), 30_000);
    await txn(70); // insert orders 170, update users 3 (order 165, which it deletes, never existed)
    await waitFor('tail --count 2 to exit', () => live.child.exitCode !== null, 60_000).catch(async (err) => {
      await live.kill9();
      throw new Error(`${(err as Error).message}; its output: ${live.output()}`);
    });
    expect(live.child.exitCode).toBe(0);
    const liveLines: ChangeEvent[] = live.stdout().trim().split('\n').map((l) => JSON.parse(l));
    expect(shape(liveLines.map(asRow))).toEqual([exp('orders', 'insert', 170), exp('users', 'update', 3)]);
    expect(liveLines[0].new).toEqual({ id: '170', total: '70.50', note: 'order 70' });

    const human = await tail(['--from', 'beginning', '--tables', 'public.orders', '--count', '2']);
    expect(human.code).toBe(0);
    expect(human.stdout.trim().split('\n')).toEqual([
      expect.stringMatching(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} [0-9A-F]+\/[0-9A-F]+ insert {3}public\.orders \{"id":"1","total":"1\.00","note":null\}$/),
      expect.stringMatching(/ insert {3}public\.orders \{"id":"2","total":"2\.00","note":null\}$/),
    ]);

    const missing = await runCli(['tail', '--source', 'nosuch'], w.env);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/pgferry tail: source 'nosuch' has no change stream \(pgferry\.nosuch\.changes\) in RabbitMQ; start pgferry for that source first/);
    const badOps = await tail(['--ops', 'upsert']);
    expect(badOps.code).toBe(2);
    expect(badOps.stderr).toMatch(/operation 'upsert' is not one of insert, update, delete, truncate, schema \(--tables, --ops\)/);
  });
});

/** A ChangeEvent in the shape of a `seen` row. */
const asRow = (e: ChangeEvent) => ({ tbl: `${e.schema}.${e.table}`, op: e.operation, key: JSON.stringify(e.key) });
