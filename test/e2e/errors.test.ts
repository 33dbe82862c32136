import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import { runCli } from '../helpers/procs';
import { cli, createWorld, deleteStream, startUp, upArgs, waitForEqual, World } from '../helpers/fixture';
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
    for (const extra of ['shop', 'internals']) await deleteStream(`${w.sourceName}_${extra}`).catch(() => undefined);
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
    expect(r.stderr).toMatch(/invalid configuration: 2 problems:\n  - sources\[\]\.url \(PGFERRY_SOURCE, --source\): must be a postgres:\/\/ URL or a libpq keyword\/value string/);
    expect(r.stderr).toMatch(/\n  - replicas\.Bad-Name\.name: replica name 'Bad-Name' is not allowed/);
    expect(r.stderr).not.toMatch(STACK);
  });

  it('init reports, by name and with the fix, what would fail later: unidentifiable tables, mismatching replica columns', async () => {
    const src = await w.source.createDatabase('shop');
    await w.source.withClient('shop', (c) =>
      c.query(`CREATE TABLE orders (id int PRIMARY KEY, note text, "Qty" int);
               CREATE TABLE events (at timestamptz);
               ALTER TABLE events REPLICA IDENTITY NOTHING;`),
    );
    const dst = await w.replicas.createDatabase('shop_copy');
    await w.replicas.withClient('shop_copy', (c) =>
      c.query(`CREATE TABLE orders (id int PRIMARY KEY, note varchar(3), must int NOT NULL);
               CREATE TABLE events (at timestamptz);`),
    );
    const args = ['init', '--source', src, '--source-name', `${w.sourceName}_shop`, '--replica', `c=${dst}`];
    const r = await runCli(args, w.env);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toContain(
      `WARNING source '${w.sourceName}_shop': table public.events has REPLICA IDENTITY NOTHING, so PostgreSQL refuses UPDATE and DELETE on it while it is replicated; run ALTER TABLE public.events REPLICA IDENTITY FULL, or add a primary key`,
    );
    expect(r.stdout).toContain(
      `replica 'c': ERROR replica 'c': column public.orders."Qty" (integer) is missing; public.orders.must is NOT NULL without a default on the replica, and the source does not send it; make the replica's table match the source's`,
    );
    expect(r.stdout).toContain('1 replica(s) not ready');
    expect(r.stderr).not.toMatch(STACK);

    // A differing type is a warning: the replica's input function converts (or refuses) each value.
    await w.replicas.withClient('shop_copy', (c) => c.query(`ALTER TABLE orders ADD COLUMN "Qty" int, DROP COLUMN must`));
    const again = await runCli(args, w.env);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.stdout).toContain(
      `WARNING replica 'c': column public.orders.note is character varying(3) on the replica but text on the source; values are converted by the replica's input function, which may round or refuse them`,
    );
    expect(again.stdout).toContain(`replica 'c': ready`);
    expect(again.stdout).toContain('ready: run pgferry up to start replicating');
  });

  it('a column whose type cannot be carried stops start-up with its name, before any slot is created', async () => {
    const src = await w.source.createDatabase('internals');
    await w.source.withClient('internals', (c) =>
      c.query(`CREATE TABLE "Plans" (id int PRIMARY KEY, tree pg_node_tree);
               INSERT INTO "Plans" SELECT 1, adbin FROM pg_attrdef LIMIT 1;`),
    );
    const name = `${w.sourceName}_internals`;
    const r = await runCli(['init', '--source', src, '--source-name', name], w.env);
    expect(r.code).toBe(1);
    expect(reason(r.stderr)).toBe(
      `pgferry: source '${name}': column public."Plans".tree (type pg_node_tree) cannot be replicated: pgferry carries values as text and PostgreSQL cannot read this type back from text; leave the table out with --tables, or change the column's type`,
    );
    const slots = await w.source.withClient('internals', (c) => c.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = $1`, [`pgferry_${name}`]));
    expect(slots.rows).toHaveLength(0);
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
