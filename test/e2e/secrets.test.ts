import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { Client, Connection } from '@temporalio/client';
import type { Proc } from '../helpers/procs';
import { CliResult, runCli } from '../helpers/procs';
import { createWorld, RABBIT_URL, startUp, upArgs, waitForEqual, World } from '../helpers/fixture';
import { createRabbitUser, filesUnder, findSecrets, RabbitUser, requirePasswords, secret, urlWith } from '../helpers/security';
import { waitFor } from '../helpers/wait';
import { freePort } from '../helpers/ports';

/**
 * No secret leaves pgferry: the source, every replica and RabbitMQ are
 * reached with passwords (the clusters check them: SCRAM on TCP), pgferry
 * runs every everyday command and a few error paths, and then everything it
 * left behind is searched for the passwords and for connection strings with
 * credentials — every Temporal workflow history (all runs, the snapshot
 * workflow included), memo, search attribute and pending activity, the log
 * of every process, every CLI output, the metrics page and the data
 * directory. In Temporal, outside error messages, no connection string may
 * appear at all (invariant 4: workflows carry names).
 *
 * The roles are superusers here: what a least-privileged role needs is the
 * subject of least-privilege.test.ts.
 */
const SCHEMA = `
  CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
  CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, amount numeric NOT NULL);
`;
const TABLES = ['customers', 'orders'];

describe('no secret in Temporal, logs or CLI output', () => {
  let w: World;
  let up: Proc | undefined;
  let rabbit: RabbitUser | null = null;
  const outputs: { what: string; text: string }[] = [];
  const passwords: string[] = [];
  let urls: { source: string; a: string; b: string; c: string; rabbit: string };
  let metricsPort = 0;

  /** Run the CLI with the world's environment, keeping what it printed for the search at the end. */
  const cli = async (args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs?: number): Promise<CliResult> => {
    const r = await runCli(args, { ...w.env, ...env }, timeoutMs);
    outputs.push({ what: `pgferry ${args.map((a) => (a.includes('://') ? '<url>' : a)).join(' ')} (exit ${r.code})`, text: r.stdout + r.stderr });
    return r;
  };
  const status = async (name: string) => JSON.parse((await cli(['replica', 'status', name, '--json'])).stdout);

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a', 'b'], schema: SCHEMA });
    const pw = {
      source: secret('S3cr3t-src'),
      a: secret('S3cr3t-a'),
      // Characters a URL must percent-encode: the encoded and the plain form must both stay hidden.
      b: secret('S3cr3t-b', ':p@ss/w%rd?#&='),
      c: secret('S3cr3t-c'),
      rabbit: secret('S3cr3t-mq'),
    };
    passwords.push(...Object.values(pw));
    await Promise.all([requirePasswords(w.source), requirePasswords(w.replicas)]);
    await w.source.withClient('app', (c) => c.query(`CREATE ROLE pgferry_src LOGIN SUPERUSER PASSWORD ${pg.escapeLiteral(pw.source)}`));
    await w.replicas.withClient('postgres', async (c) => {
      for (const r of ['a', 'b', 'c'] as const) await c.query(`CREATE ROLE pgferry_${r} LOGIN SUPERUSER PASSWORD ${pg.escapeLiteral(pw[r])}`);
    });
    await w.replicas.createDatabase('replica_c');
    rabbit = await createRabbitUser(`pgferry_${w.sourceName}`, pw.rabbit, w.sourceName);
    urls = {
      source: urlWith(w.source, 'app', 'pgferry_src', pw.source),
      a: urlWith(w.replicas, 'replica_a', 'pgferry_a', pw.a),
      b: urlWith(w.replicas, 'replica_b', 'pgferry_b', pw.b),
      c: urlWith(w.replicas, 'replica_c', 'pgferry_c', pw.c),
      rabbit: rabbit?.url ?? RABBIT_URL,
    };
    if (!rabbit) console.log('rabbitmqctl is not usable here: RabbitMQ is reached with the default URL, only its URL form is checked');

    // The passwords are really checked: without one, the source refuses the role.
    const noPassword = new pg.Client({ connectionString: `postgres://pgferry_src@127.0.0.1:${w.source.port}/app` });
    await expect(noPassword.connect()).rejects.toThrow(/password/);

    w.sourceUrl = urls.source;
    w.replicaUrls = { a: urls.a, b: urls.b };
    // Every command (status, verify, …) gets the URLs the way an operator would give them to a script: the environment.
    Object.assign(w.env, { PGFERRY_RABBITMQ_URL: urls.rabbit, PGFERRY_SOURCE: urls.source, PGFERRY_REPLICAS: `a=${urls.a},b=${urls.b}` });
    metricsPort = await freePort();
    // `up` gets the URLs as flags, its SDK logs at INFO, and a metrics endpoint.
    up = await startUp(w, upArgs(w, ['--rabbitmq', urls.rabbit]), { PGFERRY_METRICS_PORT: String(metricsPort), PGFERRY_TEMPORAL_LOG_LEVEL: 'INFO' });
  });

  afterAll(async () => {
    await up?.stop();
    await rabbit?.remove();
    await w?.teardown();
  });

  it('runs replication, the everyday commands and error paths with passworded connections', async () => {
    const src = (sql: string, values?: unknown[]) => w.source.withClient('app', (c) => c.query(sql, values));
    await src(`INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 50) g`);
    await src(`INSERT INTO orders SELECT g, 1 + g % 50, g * 1.5 FROM generate_series(1, 200) g`);
    await src(`UPDATE orders SET amount = amount + 1 WHERE id % 3 = 0; DELETE FROM customers WHERE id > 45`);
    await Promise.all([waitForEqual(w, 'a', TABLES), waitForEqual(w, 'b', TABLES)]);

    // Everyday commands, human and --json.
    const everyday = await Promise.all([
      cli(['status', '--json']),
      cli(['status']),
      cli(['replica', 'status', 'a']),
      cli(['replica', 'list', '--json']),
      cli(['capture', 'status']),
      cli(['config', 'check']),
    ]);
    for (const r of everyday) expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(JSON.parse(everyday[0].stdout).ok).toBe(true);
    const verified = await Promise.all([cli(['verify', 'a', '--json']), cli(['verify', 'b'])]);
    for (const r of verified) expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(JSON.parse(verified[0].stdout).equal).toBe(true);

    // A third replica from a snapshot: the workflow pgferry-snapshot-c, served by the add process.
    const add = await cli(['replica', 'add', 'c', '--snapshot', '--create-tables', '--source', urls.source, '--replica', `c=${urls.c}`], {}, 120_000);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    expect(add.stdout).toMatch(/copied \d+ rows/);

    // Pause and resume.
    expect((await cli(['replica', 'pause', 'b'])).code).toBe(0);
    await waitFor('replica b to be paused', async () => (await status('b')).state === 'paused', 20_000);
    expect((await cli(['replica', 'resume', 'b'])).code).toBe(0);

    // Error path 1: replica b rejects a row; its error is in status, the log and Temporal.
    await w.replicas.withClient('replica_b', (c) => c.query('ALTER TABLE orders ADD CONSTRAINT positive CHECK (amount >= 0)'));
    await src(`INSERT INTO orders VALUES (1001, 1, -5)`);
    const rejected = await waitFor('replica b to fail on the rejected row', async () => {
      const v = await status('b');
      return v.state === 'failed' ? v : null;
    }, 60_000);
    expect(rejected.lastError).toMatch(/violates check constraint "positive"/);
    await w.replicas.withClient('replica_b', (c) => c.query('ALTER TABLE orders DROP CONSTRAINT positive'));
    expect((await cli(['replica', 'resume', 'b'])).code).toBe(0);

    // Error path 2: a replica added with a wrong password: the snapshot workflow fails in Temporal, and the
    // error (in its history and on the terminal) names the server with the password masked.
    const wrongD = secret('Wr0ng-d');
    passwords.push(wrongD);
    const refusedAdd = await cli(['replica', 'add', 'd', '--snapshot', '--source', urls.source, '--replica', `d=${urlWith(w.replicas, 'replica_c', 'pgferry_c', wrongD)}`]);
    expect(refusedAdd.code).not.toBe(0);
    expect(refusedAdd.stderr).toMatch(/replica 'd' at postgres:\/\/pgferry_c:\*\*\*@.*authentication failed/);
    await Promise.all([waitForEqual(w, 'a', TABLES), waitForEqual(w, 'b', TABLES)]);

    // Error path 3: wrong passwords given to the CLI, and a malformed URL holding a password.
    const wrong = { pg: secret('Wr0ng-pg'), mq: secret('Wr0ng-mq'), bad: secret('Wr0ng-bad') };
    passwords.push(...Object.values(wrong));
    const mqUser = rabbit?.user ?? 'guest';
    const malformedUrl = `postgres://pgferry_src:${wrong.bad}@127.0.0.1:notaport/app`;
    const [refusedPg, refusedMq, malformed, malformedInit] = await Promise.all([
      cli(['init', '--replica', `x=${urlWith(w.replicas, 'replica_a', 'pgferry_a', wrong.pg)}`]),
      cli(['capture', 'status', '--rabbitmq', `amqp://${mqUser}:${wrong.mq}@127.0.0.1:${new URL(RABBIT_URL).port || 5672}`]),
      cli(['config', 'check', '--source', malformedUrl]),
      cli(['init', '--source', malformedUrl, '--wait', '1']),
    ]);
    expect(refusedPg.code).not.toBe(0);
    expect(refusedPg.stderr).toMatch(/replica 'x' at postgres:\/\/pgferry_a:\*\*\*@.*authentication failed/);
    expect(refusedMq.stdout).toContain(`RabbitMQ at amqp://${mqUser}:***@`);
    expect(refusedMq.stdout).toMatch(/access refused/);
    expect(malformed.stdout).toContain('url: postgres://pgferry_src:***@127.0.0.1:notaport/app');
    expect(malformedInit.code).not.toBe(0);

    // The metrics page, read like Prometheus would.
    const metrics = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    expect(metrics.status).toBe(200);
    outputs.push({ what: 'GET /metrics', text: await metrics.text() });
  });

  it('leaves no password, and no connection string with credentials, anywhere', async () => {
    const leaks: string[] = [];
    const check = (what: string, text: string) => {
      for (const f of findSecrets(text, passwords)) leaks.push(`${what}: ${f}`);
    };

    // Temporal: every execution (closed runs and the snapshot workflow included), with its history,
    // memo, search attributes and pending activities (heartbeat details, last failure).
    const connection = await Connection.connect({ address: w.temporal.address });
    const ids = new Set<string>();
    const texts = new Map<string, string>();
    try {
      const client = new Client({ connection });
      const executions = [];
      for await (const e of client.workflow.list()) executions.push(e);
      for (const e of executions) {
        ids.add(e.workflowId);
        const handle = client.workflow.getHandle(e.workflowId, e.runId);
        const [history, description] = await Promise.all([handle.fetchHistory(), handle.describe()]);
        const what = `Temporal ${e.workflowId} (run ${e.runId})`;
        const everything = decodePayloads(JSON.stringify({ history, description, listed: e }));
        check(what, everything);
        texts.set(e.workflowId, (texts.get(e.workflowId) ?? '') + everything);
        // Outside error messages, not even a masked connection string: workflows carry names only.
        const withoutFailures = decodePayloads(JSON.stringify(stripFailures({ history, description, listed: e })));
        for (const m of withoutFailures.matchAll(/\b(postgres(?:ql)?|amqps?):\/\//gi)) {
          leaks.push(`${what}: a ${m[1]} URL outside any error message: ${JSON.stringify(withoutFailures.slice(Math.max(0, m.index! - 100), m.index! + 100))}`);
        }
      }
    } finally {
      await connection.close();
    }
    expect([...ids].sort()).toEqual(
      expect.arrayContaining([`pgferry-capture-${w.sourceName}`, 'pgferry-replica-a', 'pgferry-replica-b', 'pgferry-snapshot-c']),
    );

    // The search had material: the errors are in the histories, with the servers named and masked.
    expect(texts.get('pgferry-snapshot-d')).toContain(`replica 'd' at postgres://pgferry_c:***@`);
    expect(texts.get('pgferry-replica-b')).toContain('violates check constraint');
    expect(texts.get('pgferry-snapshot-c')).toContain('copySnapshot');

    check('pgferry up (stdout and stderr)', up!.output());
    for (const o of outputs) check(o.what, o.text);
    for (const f of filesUnder(w.dataDir)) check(`file ${f.file}`, f.text);
    console.log(
      `searched ${ids.size} workflows, ${outputs.length} command outputs, ${(up!.output().length / 1024).toFixed(0)} kB of up's log for ${passwords.length} passwords: ${leaks.length} leak(s)`,
    );
    expect(leaks).toEqual([]);
  });
});

/** Payload data (base64 in a history's JSON) decoded to text, next to the original. */
function decodePayloads(json: string): string {
  return json.replace(/"data":"([A-Za-z0-9+/=]*)"/g, (whole, b64: string) => `${whole} ${Buffer.from(b64, 'base64').toString('utf8')}`);
}

/** The same object without failures (activity errors are allowed to name a server, masked). */
function stripFailures(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripFailures);
  if (v === null || typeof v !== 'object') return v;
  if (v instanceof Uint8Array) return Buffer.from(v).toString('base64');
  const o = (typeof (v as { toJSON?: () => unknown }).toJSON === 'function' ? (v as { toJSON: () => unknown }).toJSON() : v) as Record<string, unknown>;
  if (o === null || typeof o !== 'object') return o;
  return Object.fromEntries(Object.entries(o).filter(([k]) => !/failure/i.test(k)).map(([k, x]) => [k, stripFailures(x)]));
}
