import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import { cli, contentOf, createWorld, progressOf, startUp, waitForEqual, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';

/**
 * The spine, end to end: a source with three tables, two replicas, real
 * PostgreSQL, RabbitMQ and Temporal; the replicas must end equal to the
 * source, row by row.
 */
const SCHEMA = `
  CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text);
  CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL, amount numeric(12,2), placed_at timestamptz NOT NULL DEFAULT now(), note text);
  CREATE TABLE items (sku text PRIMARY KEY, qty int NOT NULL, attrs jsonb);
`;
const TABLES = ['customers', 'orders', 'items'];

describe('WAL replication end to end', () => {
  let w: World;
  let upProc: Proc;

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a', 'b'], schema: SCHEMA });
    upProc = await startUp(w);
  });

  afterAll(async () => {
    await upProc?.stop();
    await w?.teardown();
  });

  it('replicates inserts, updates (including a changed primary key), deletes and multi-table transactions to both replicas', async () => {
    await w.source.withClient('app', async (c) => {
      for (let i = 1; i <= 50; i++) {
        await c.query('INSERT INTO customers VALUES ($1, $2, $3)', [i, `customer ${i}`, i % 7 ? `c${i}@example.com` : null]);
      }
      // multi-table transactions
      for (let i = 1; i <= 20; i++) {
        await c.query('BEGIN');
        await c.query(`INSERT INTO orders (customer_id, amount, placed_at, note) VALUES ($1, $2, '2026-01-02 03:04:05.123456+00', $3)`, [i, `${i}.25`, `it's "quoted" \\ ${i}`]);
        await c.query('INSERT INTO items VALUES ($1, $2, $3)', [`sku-${i}`, i, JSON.stringify({ b: i, a: [1, 2, { z: null }] })]);
        await c.query('UPDATE customers SET email = $1 WHERE id = $2', [`vip${i}@example.com`, i]);
        await c.query('COMMIT');
      }
      await c.query('UPDATE customers SET id = 1000 WHERE id = 3'); // primary key change
      await c.query('UPDATE items SET sku = $1, qty = qty + 100 WHERE sku = $2', ['sku-renamed', 'sku-4']);
      await c.query('DELETE FROM customers WHERE id BETWEEN 40 AND 45');
      await c.query('DELETE FROM orders WHERE id % 5 = 0');
      await c.query(`UPDATE items SET attrs = '{"y": 1,   "x": [true]}' WHERE qty % 3 = 0`);
    });
    await Promise.all([waitForEqual(w, 'a', TABLES), waitForEqual(w, 'b', TABLES)]);
    const a = await contentOf(w.replicas, 'replica_a', TABLES);
    expect(a.customers).toHaveLength(44);
    expect(a.customers.some((r) => r.startsWith('(1000,'))).toBe(true);
    expect(a.orders.some((r) => r.includes('2026-01-02 03:04:05.123456+00'))).toBe(true);
  });

  it('reports state, applied position and lag with replica status --json, and lists replicas', async () => {
    const r = await waitFor('status of both replicas to show them running and caught up', async () => {
      const res = await cli(w, ['replica', 'status', '--json']);
      if (res.code !== 0) throw new Error(res.stderr);
      const views = JSON.parse(res.stdout);
      return views.length === 2 && views.every((v: { state: string; lagBytes: number }) => v.state === 'running' && v.lagBytes === 0) ? views : null;
    });
    const progressA = await progressOf(w, 'a');
    const a = r.find((v: { replica: string }) => v.replica === 'a');
    expect(a.appliedLsn).toBe(progressA.lsn);
    expect(a.lagSeconds).toBe(0);
    expect(a.txns).toBeGreaterThan(70);
    const list = await cli(w, ['replica', 'list', '--json']);
    expect(list.code).toBe(0);
    expect(JSON.parse(list.stdout).map((x: { name: string }) => x.name)).toEqual(['a', 'b']);
    const capture = await cli(w, ['capture', 'status', '--json']);
    expect(capture.code).toBe(0);
    expect(JSON.parse(capture.stdout).state).toBe('running');
    const human = await cli(w, ['replica', 'status']);
    expect(human.stdout).toMatch(/^REPLICA\s+STATE/);
  });

  it('pause holds replica b still while a moves; resume brings both to the source', async () => {
    const t0 = Date.now();
    const paused = await cli(w, ['replica', 'pause', 'b']);
    const pauseSeconds = (Date.now() - t0) / 1000;
    expect(paused.code).toBe(0);
    // The command answers once the pause is reached (the setPaused update): no polling needed.
    expect(paused.stdout).toMatch(/replica 'b' paused/);
    expect(JSON.parse((await cli(w, ['replica', 'status', 'b', '--json'])).stdout).state).toBe('paused');
    console.log(`pause reached in ${pauseSeconds.toFixed(2)} s (includes one CLI process start)`);
    const before = await progressOf(w, 'b');
    const contentBefore = await contentOf(w.replicas, 'replica_b', TABLES);

    await w.source.withClient('app', async (c) => {
      for (let i = 0; i < 1000; i++) {
        await c.query('INSERT INTO orders (customer_id, amount, note) VALUES ($1, $2, $3)', [i % 50, `${i}.${i % 100}`, `batch ${i}`]);
      }
    });
    await waitForEqual(w, 'a', TABLES);
    expect((await progressOf(w, 'b')).lsn).toBe(before.lsn);
    expect(await contentOf(w.replicas, 'replica_b', TABLES)).toEqual(contentBefore);
    // Lag is computed from the capture's heartbeat, delivered every 2 s: status shows it within that.
    const statusB = await waitFor('status of paused replica b to show lag', async () => {
      const v = JSON.parse((await cli(w, ['replica', 'status', 'b', '--json'])).stdout);
      return v.lagBytes > 0 ? v : null;
    }, 10_000, 200);
    expect(statusB.state).toBe('paused');

    expect((await cli(w, ['replica', 'resume', 'b'])).code).toBe(0);
    await Promise.all([waitForEqual(w, 'a', TABLES), waitForEqual(w, 'b', TABLES)]);
    expect(Number((await progressOf(w, 'b')).txns_applied)).toBeGreaterThanOrEqual(Number(before.txns_applied) + 1000);
  });

  it('shows the workflows in the Temporal Web UI under their ids', async () => {
    for (const id of ['pgferry-replica-a', 'pgferry-replica-b', `pgferry-capture-${w.sourceName}`]) {
      const res = await fetch(`http://127.0.0.1:${w.temporal.uiPort}/api/v1/namespaces/default/workflows/${id}`);
      expect(res.status).toBe(200);
      const body = await res.json();
      expect(body.workflowExecutionInfo.execution.workflowId).toBe(id);
      expect(body.workflowExecutionInfo.status).toBe('WORKFLOW_EXECUTION_STATUS_RUNNING');
    }
    const page = await fetch(`http://127.0.0.1:${w.temporal.uiPort}/namespaces/default/workflows`);
    expect(page.status).toBe(200);
  });

  it('keeps no connection string or password in Temporal history', async () => {
    const { Connection, Client } = await import('@temporalio/client');
    const connection = await Connection.connect({ address: w.temporal.address });
    const client = new Client({ connection });
    for (const id of ['pgferry-replica-a', `pgferry-capture-${w.sourceName}`]) {
      const history = JSON.stringify(await client.workflow.getHandle(id).fetchHistory());
      const decoded = history.replace(/"data":"([^"]*)"/g, (_, b64) => Buffer.from(b64, 'base64').toString('utf8'));
      expect(decoded).toContain(id.includes('replica') ? 'replica' : 'source');
      expect(decoded).not.toMatch(/postgres(ql)?:\/\//);
      expect(decoded).not.toContain('amqp://');
    }
    await connection.close();
  });
});
