import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import type { Proc } from '../helpers/procs';
import { cli, createWorld, progressOf, startUp, waitForEqual, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';
import { compareLsn } from '../../src/lsn';

/**
 * A replica that rejects a change stops in state `failed` naming the table,
 * the key, the source position and the database's message; it does not retry
 * in a hot loop; the other replica carries on; after the operator fixes the
 * replica, `replica resume` continues from that very change.
 */
const SCHEMA = `CREATE TABLE orders (id int PRIMARY KEY, amount numeric NOT NULL, note text)`;

describe('a change rejected by one replica', () => {
  let w: World;
  let up: Proc;

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a', 'b'], schema: SCHEMA });
    // Replica b has a constraint the source does not: it will refuse negative amounts.
    await w.replicas.withClient('replica_b', (c) => c.query('ALTER TABLE orders ADD CONSTRAINT positive CHECK (amount >= 0)'));
    up = await startUp(w);
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  it('stops that replica with the reason, leaves the other running, and resumes after the fix', async () => {
    await w.source.withClient('app', async (c) => {
      await c.query(`INSERT INTO orders VALUES (1, 10, 'fine'), (2, 20, 'fine')`);
      // b refuses one row in the middle of this transaction (applied as one COPY, then row by row to name it)
      await c.query(`INSERT INTO orders SELECT g, CASE WHEN g = 54 THEN -5 ELSE g END, 'bulk' FROM generate_series(3, 102) g`);
      for (let i = 103; i <= 150; i++) await c.query('INSERT INTO orders VALUES ($1, $2, $3)', [i, i, 'after']);
    });
    await waitForEqual(w, 'a', ['orders']);

    const failed = await waitFor('replica b to fail', async () => {
      const r = await cli(w, ['replica', 'status', 'b', '--json']);
      const v = JSON.parse(r.stdout);
      return v.state === 'failed' ? { v, code: r.code } : null;
    });
    expect(failed.code).toBe(1);
    expect(failed.v.lastError).toMatch(
      /^replica 'b': insert on public\.orders key \{"id":"54"\} at source position [0-9A-F]+\/[0-9A-F]+ was rejected: new row for relation "orders" violates check constraint "positive" \[23514\]; fix the replica \(or the row\), then run pgferry replica resume b$/,
    );
    expect(up.output()).toMatch(/"level":50.*violates check constraint \\"positive\\"/); // in the log too

    // No hot retry loop: exactly one failed attempt in the workflow's history, however long we wait.
    const connection = await Connection.connect({ address: w.temporal.address });
    const client = new Client({ connection });
    const countFailures = async () => {
      const history = await client.workflow.getHandle('pgferry-replica-b').fetchHistory();
      return (history.events ?? []).filter((e) => e.activityTaskFailedEventAttributes).length;
    };
    expect(await countFailures()).toBe(1);
    const a = JSON.parse((await cli(w, ['replica', 'status', 'a', '--json'])).stdout);
    expect(a.state).toBe('running');
    expect(await countFailures()).toBe(1);
    await connection.close();

    // b holds exactly what came before the rejected transaction.
    const rows = await w.replicas.withClient('replica_b', async (c) => (await c.query('SELECT id FROM orders ORDER BY id')).rows.map((r) => Number(r.id)));
    expect(rows).toEqual([1, 2]);
    const rejectedAt = /at source position (\S+) was rejected/.exec(failed.v.lastError)![1];
    expect(compareLsn((await progressOf(w, 'b')).lsn, rejectedAt)).toBe(-1); // stopped just before it

    // The operator fixes the replica and resumes: b continues from the rejected change.
    await w.replicas.withClient('replica_b', (c) => c.query('ALTER TABLE orders DROP CONSTRAINT positive'));
    expect((await cli(w, ['replica', 'resume', 'b'])).code).toBe(0);
    await waitForEqual(w, 'b', ['orders']);
    expect(JSON.parse((await cli(w, ['replica', 'status', 'b', '--json'])).stdout).lastError).toBeNull();

    // Single-row changes travel many to a round trip; a refused one is still named exactly.
    await w.replicas.withClient('replica_b', (c) => c.query('ALTER TABLE orders ADD CONSTRAINT positive CHECK (amount >= 0) NOT VALID'));
    await w.source.withClient('app', (c) =>
      c.query(`BEGIN; INSERT INTO orders VALUES (200, 1, 'x'); UPDATE orders SET amount = -1 WHERE id = 5; DELETE FROM orders WHERE id = 6; INSERT INTO orders VALUES (201, 1, 'y'); COMMIT`),
    );
    const again = await waitFor('replica b to fail again', async () => {
      const v = JSON.parse((await cli(w, ['replica', 'status', 'b', '--json'])).stdout);
      return v.state === 'failed' ? v : null;
    });
    expect(again.lastError).toMatch(/^replica 'b': update on public\.orders key \{"id":"5"\} at source position \S+ was rejected: new row for relation "orders" violates check constraint "positive"/);
    expect(up.output()).toMatch(/refused a group of statements; applying them one by one/);
    const kept = await w.replicas.withClient('replica_b', async (c) => (await c.query('SELECT count(*)::int AS n FROM orders WHERE id IN (200, 201)')).rows[0].n);
    expect(kept).toBe(0); // nothing of the refused transaction
  });
});
