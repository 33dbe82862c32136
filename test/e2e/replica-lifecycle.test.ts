import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import type { Proc } from '../helpers/procs';
import { cli, createWorld, progressOf, startUp, waitForEqual, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';
import { findTemporalBinary } from '../../src/temporal/dev-server';
import { replicaWorkflowId } from '../../src/names';
import { replicaStatusQuery } from '../../workflows/messages';

/**
 * One replica's workflow, started and stopped on its own (issue 28): from
 * any Temporal client with the one-field input `{"replica": "<name>"}` — here
 * exactly the `temporal workflow start` command of the README — and with
 * `pgferry replica start` / `stop`. The worker resolves the source and tables
 * from its own configuration; the replica continues from its checkpoint and
 * ends equal to the source. An unknown name fails the workflow at once,
 * naming the replicas the worker knows.
 */
const SCHEMA = `CREATE TABLE orders (id int PRIMARY KEY, amount numeric NOT NULL, note text)`;
const run = promisify(execFile);

describe('a replica started by name alone, and replica start / stop', () => {
  let w: World;
  let up: Proc;
  let client: Client;
  let next = 1;

  const write = (n: number) =>
    w.source.withClient('app', async (c) => {
      await c.query(`INSERT INTO orders SELECT g, g * 1.5, 'row ' || g FROM generate_series($1::int, $2::int) g`, [next, next + n - 1]);
      await c.query(`UPDATE orders SET note = note || ' updated' WHERE id % 7 = 0 AND id >= $1`, [next]);
      next += n;
    });
  const temporal = (...args: string[]) => run(findTemporalBinary()!, [...args, '--address', w.temporal.address], { encoding: 'utf8' });
  const stateOf = async (name: string) => (await client.workflow.getHandle(replicaWorkflowId(name)).query(replicaStatusQuery)).state;
  const listed = async (query: string) => {
    const ids: string[] = [];
    for await (const wf of client.workflow.list({ query })) ids.push(wf.workflowId);
    return ids.sort();
  };

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a', 'b'], schema: SCHEMA });
    client = new Client({ connection: await Connection.connect({ address: w.temporal.address }) });
    up = await startUp(w);
    await write(200);
    await waitForEqual(w, 'a', ['orders']);
    await waitForEqual(w, 'b', ['orders']);
  });

  afterAll(async () => {
    await up?.stop();
    await client?.connection.close();
    await w?.teardown();
  });

  it('temporal workflow start with {"replica":"b"} brings a terminated replica back to running, equal to the source', async () => {
    const id = replicaWorkflowId('b');
    await temporal('workflow', 'terminate', '--workflow-id', id, '--reason', 'test: terminated in the UI');
    expect((await client.workflow.getHandle(id).describe()).status.name).toBe('TERMINATED');
    // (The session in flight learns of it from its next heartbeat, within about a second, and stops;
    // what it committed meanwhile is in b's checkpoint, so whether it took these rows does not matter.)
    await write(300);
    await waitForEqual(w, 'a', ['orders']);

    const { stdout } = await temporal(
      'workflow', 'start', '--type', 'replicaWorkflow', '--task-queue', 'pgferry-apply', '--workflow-id', id, '--input', '{"replica":"b"}',
    );
    expect(stdout).toMatch(/Running execution/);
    await waitFor('b to run again', async () => (await stateOf('b')) === 'running');
    await write(100);
    await waitForEqual(w, 'b', ['orders']);
    // The worker said the search attributes are registered (the dev server has them): the UI can filter it.
    await waitFor('b to be listed as running by PgferryState', async () => (await listed(`PgferryState = 'running' AND WorkflowType = 'replicaWorkflow'`)).includes(id), 60_000);
  });

  it('an unknown name fails the workflow at once, naming the replicas the worker knows', async () => {
    const id = replicaWorkflowId('nope');
    await temporal('workflow', 'start', '--type', 'replicaWorkflow', '--task-queue', 'pgferry-apply', '--workflow-id', id, '--input', '{"replica":"nope"}');
    const started = Date.now();
    const err = await client.workflow.getHandle(id).result().then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const message = (err as WorkflowFailedError).cause?.message ?? '';
    expect(message).toMatch(/^replica 'nope' is not configured on this worker \(source '\w+'\); it knows 'a', 'b'/);
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it('pgferry replica stop pauses and ends the workflow; replica start continues from the checkpoint', async () => {
    const stop = await cli(w, ['replica', 'stop', 'a']);
    expect(stop.code, stop.stderr).toBe(0);
    expect(stop.stdout).toMatch(/^replica 'a' stopped: paused \(the batch in flight committed\), then ended its workflow\. Its checkpoint stays in the replica; pgferry replica start a continues from it/);
    const desc = await client.workflow.getHandle(replicaWorkflowId('a')).describe();
    expect(desc.status.name).toBe('TERMINATED');
    // Its ended workflow still answers queries with its last status: shown as stopped, never as running.
    const shown = await cli(w, ['replica', 'status', 'a', '--json']);
    expect(JSON.parse(shown.stdout)).toMatchObject({
      replica: 'a',
      state: 'stopped',
      lastError: 'its workflow pgferry-replica-a is not running (it ended terminated); pgferry replica start a continues from its checkpoint',
    });
    const again = await cli(w, ['replica', 'stop', 'a']);
    expect(again.stdout).toMatch(/^replica 'a' is not running \(workflow pgferry-replica-a ended terminated\); nothing to stop/);

    const stoppedAt = (await progressOf(w, 'a')).lsn;
    await write(150);
    await waitForEqual(w, 'b', ['orders']);
    expect((await progressOf(w, 'a')).lsn).toBe(stoppedAt);

    const start = await cli(w, ['replica', 'start', 'a', '--json']);
    expect(start.code, start.stderr + start.stdout).toBe(0);
    const r = JSON.parse(start.stdout);
    expect(r).toMatchObject({ ok: true, replica: 'a', action: 'start', state: 'running' });
    expect(r.message).toMatch(/^replica 'a' started \(workflow pgferry-replica-a \(its previous run ended terminated\)\); state running, continuing from its checkpoint/);
    await waitForEqual(w, 'a', ['orders']);

    const twice = await cli(w, ['replica', 'start', 'a']);
    expect(twice.code).toBe(0);
    expect(twice.stdout).toMatch(/^replica 'a' is already running \(workflow pgferry-replica-a, state running\); nothing started/);
    // Each source transaction applied once: a (stopped and started) and b (terminated and started by name)
    // count the same transactions in their checkpoints as each other.
    await waitForEqual(w, 'b', ['orders']);
    expect((await progressOf(w, 'a')).txns_applied).toBe((await progressOf(w, 'b')).txns_applied);
  });
});
