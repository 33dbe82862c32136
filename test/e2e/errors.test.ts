import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import { runCli } from '../helpers/procs';
import { cli, createWorld, startUp, upArgs, waitForEqual, World } from '../helpers/fixture';
import { freePort } from '../helpers/ports';
import { waitFor } from '../helpers/wait';

/**
 * Bad input and unreachable servers give one clear line naming the thing, the
 * cause and the fix — in the CLI output, the log and replica status — never a
 * stack trace or a silent hang.
 */
const FULL = `
  CREATE TABLE customers (id int PRIMARY KEY, name text);
  CREATE TABLE items (sku text PRIMARY KEY, qty int);
`;
const STACK = /\n\s+at [^\n]+\(/;

/** The CLI's own one-line reason (structured log lines may interleave on stderr). */
function reason(stderr: string): string {
  const found = stderr.split('\n').filter((l) => l.startsWith('pgferry: '));
  expect(found, `one 'pgferry:' line in:\n${stderr}`).toHaveLength(1);
  return found[0];
}

describe('clear errors', () => {
  let w: World;
  const procs: Proc[] = [];

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a', 'b'], schema: FULL });
    // Replica b lacks a table the source publishes.
    await w.replicas.withClient('replica_b', (c) => c.query('DROP TABLE items'));
  });

  afterAll(async () => {
    for (const p of procs) await p.stop();
    await w?.teardown();
  });

  it('a source that does not answer: retried with backoff while reported, then one line naming it, the cause and the fix', async () => {
    const port = await freePort();
    const bad = `postgres://postgres:s3cret-pw@127.0.0.1:${port}/app`;
    const r = await runCli(['up', '--source', bad, '--replica', `a=${w.replicaUrls.a}`, '--wait', '2'], w.env);
    expect(r.code).toBe(3);
    expect(reason(r.stderr)).toMatch(new RegExp(`^pgferry: source '${w.sourceName}' at postgres://postgres:\\*\\*\\*@127\\.0\\.0\\.1:${port}/app: cannot connect \\(.*ECONNREFUSED.*\\); check that PostgreSQL is running`));
    expect(r.stderr).toMatch(/attempt 1; retrying in/); // reported while retried
    expect(r.stderr).toMatch(/"level":50/); // and in the structured log
    expect(r.stderr + r.stdout).not.toContain('s3cret-pw');
    expect(r.stderr).not.toMatch(STACK);
  });

  it('a source database that does not exist fails at once with the fix', async () => {
    const r = await runCli(['up', '--source', w.sourceUrl.replace(/\/app$/, '/nope'), '--wait', '30'], w.env);
    expect(r.code).toBe(2);
    expect(reason(r.stderr)).toMatch(/^pgferry: source '.*' at postgres:\/\/.*\/nope: database "nope" does not exist.*; create the database or fix its name/);
    expect(r.stderr).not.toMatch(STACK);
  });

  it('an unreachable RabbitMQ: one line naming it, the cause and the fix', async () => {
    const port = await freePort();
    const r = await runCli(['up', '--source', w.sourceUrl, '--rabbitmq', `amqp://guest:guest@127.0.0.1:${port}`, '--wait', '1'], w.env);
    expect(r.code).toBe(3);
    expect(reason(r.stderr)).toMatch(
      new RegExp(`^pgferry: RabbitMQ at amqp://guest:\\*\\*\\*@127\\.0\\.0\\.1:${port}: cannot connect \\(.*ECONNREFUSED.*\\); start RabbitMQ`),
    );
    expect(r.stderr).not.toMatch(STACK);
  });

  it('bad flags get a usage error, not a stack trace', async () => {
    const r = await runCli(['up', '--source', 'mysql://x', '--replica', 'Bad-Name=postgres://h/db'], w.env);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/source.url: must be a postgres:\/\/ or postgresql:\/\/ URL; replicas.0.name: replica name 'Bad-Name' is not allowed/);
    expect(r.stderr).not.toMatch(STACK);
  });

  it('a replica missing a table: reported by up, in the log and in replica status; fixed and resumed, it catches up', async () => {
    const up = await startUp(w);
    procs.push(up);
    const expected = `replica 'b': table public.items does not exist on the replica; create it there (e.g. pg_dump --schema-only -t … from the source), then run pgferry replica resume b`;
    expect(up.output()).toContain(`replica 'b': ERROR ${expected}`);
    expect(up.output()).toMatch(/"level":50.*table public.items does not exist on the replica/);
    await w.source.withClient('app', async (c) => {
      await c.query(`INSERT INTO customers VALUES (1, 'one'), (2, 'two')`);
      await c.query(`INSERT INTO items VALUES ('x', 1)`);
    });
    await waitForEqual(w, 'a', ['customers', 'items']);
    const status = await waitFor('replica b to be failed in status', async () => {
      const r = await cli(w, ['replica', 'status', 'b', '--json']);
      const v = JSON.parse(r.stdout);
      return v.state === 'failed' ? { r, v } : null;
    });
    expect(status.r.code).toBe(1); // non-zero while a replica is failed
    expect(status.v.lastError).toBe(expected);
    const human = await cli(w, ['replica', 'status']);
    expect(human.stdout).toContain(expected);
    expect(human.code).toBe(1);

    await w.replicas.withClient('replica_b', (c) => c.query('CREATE TABLE items (sku text PRIMARY KEY, qty int)'));
    expect((await cli(w, ['replica', 'resume', 'b'])).code).toBe(0);
    await waitForEqual(w, 'b', ['customers', 'items']);
    // Ctrl-C (SIGTERM) stops workers, closes connections and exits cleanly, promptly.
    const stopping = Date.now();
    expect(await up.stop()).toBe(0);
    expect(Date.now() - stopping).toBeLessThan(10_000);
  });

  it('while running, an unreachable RabbitMQ or source shows in replica status as a retried error, and recovers', async () => {
    const port = await freePort();
    // Capture with a source URL that does not answer; apply with a RabbitMQ that does not answer.
    const capture = await startUp(w, ['worker', '--queues', 'capture', '--source', `postgres://postgres@127.0.0.1:${port}/app`]);
    procs.push(capture);
    const apply = await startUp(w, ['worker', '--queues', 'apply', '--replica', `a=${w.replicaUrls.a}`, '--replica', `b=${w.replicaUrls.b}`, '--rabbitmq', `amqp://guest:guest@127.0.0.1:${port}`]);
    procs.push(apply);
    const v = await waitFor(
      'replica status to show both errors',
      async () => {
        const views = JSON.parse((await cli(w, ['replica', 'status', '--json'])).stdout);
        const a = views.find((x: { replica: string }) => x.replica === 'a');
        return a?.retrying && a?.captureError ? a : null;
      },
      90_000,
    );
    expect(v.state).toBe('running');
    expect(v.retrying).toMatch(new RegExp(`^RabbitMQ at amqp://[^@]*\\*\\*\\*@127\\.0\\.0\\.1:${port}: cannot connect`));
    expect(v.captureError).toMatch(new RegExp(`^source '${w.sourceName}' at postgres://postgres@127\\.0\\.0\\.1:${port}/app: cannot connect`));
    const capStatus = JSON.parse((await cli(w, ['capture', 'status', '--json'])).stdout);
    expect(capStatus.retrying).toMatch(/cannot connect/);
    expect(apply.output()).toMatch(/"level":40.*RabbitMQ at amqp:\/\/[^@"]*\*\*\*@/);
    expect(apply.output()).not.toContain("guest:guest");

    // The servers "come back": workers with the right addresses take over; nothing was lost meanwhile.
    await w.source.withClient('app', (c) => c.query(`INSERT INTO customers VALUES (3, 'three')`));
    await capture.stop();
    await apply.stop();
    const good = await startUp(w, upArgs(w));
    procs.push(good);
    await Promise.all([waitForEqual(w, 'a', ['customers', 'items']), waitForEqual(w, 'b', ['customers', 'items'])]);
  });
});
