import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { Worker } from '@temporalio/worker';
import { runCli, type Proc } from '../helpers/procs';
import { cli, createWorld, startUp, waitForEqual, World } from '../helpers/fixture';
import { freePort } from '../helpers/ports';
import { waitFor } from '../helpers/wait';
import { DevServer, startDevServer } from '../../src/temporal/dev-server';
import { logger } from '../../src/logger';
import { captureWorkflowId, replicaWorkflowId } from '../../src/names';
import { pauseSignal, resumeSignal } from '../../workflows/messages';

/**
 * The Temporal UI view of pgferry: workflows carry the search attributes
 * PgferryState / PgferrySource / PgferryLagSeconds and a memo describing them,
 * so an operator lists failed replicas as the Web UI does (a visibility query),
 * and pauses/resumes one by sending its signal. The Temporal server used here
 * starts without pgferry's attributes, like a user's own cluster: pgferry up
 * registers them itself; pgferry temporal setup is idempotent.
 */
const SCHEMA = `CREATE TABLE orders (id int PRIMARY KEY, amount numeric NOT NULL, note text)`;
const NAMES = ['PgferryState', 'PgferryLagSeconds', 'PgferrySource'];

describe('search attributes and memo for the Temporal UI', () => {
  let w: World;
  let up: Proc;
  let bare: DevServer;
  let bareDir: string;
  let client: Client;

  /** Workflow ids a visibility query returns, sorted (what the Web UI's list shows for that query). */
  const list = async (query: string) => {
    const ids: string[] = [];
    for await (const wf of client.workflow.list({ query })) ids.push(wf.workflowId);
    return ids.sort();
  };
  /** Wait until a query returns exactly `ids`: visibility is eventually consistent. */
  const listed = (query: string, ids: string[], timeoutMs = 60_000) =>
    waitFor(`${query} to list ${JSON.stringify(ids)}`, async () => {
      const got = await list(query);
      return JSON.stringify(got) === JSON.stringify([...ids].sort()) ? got : null;
    }, timeoutMs);
  const registered = async (c: Client) => (await c.connection.operatorService.listSearchAttributes({ namespace: 'default' })).customAttributes ?? {};
  const history = async (id: string) => (await client.workflow.getHandle(id).fetchHistory()).events ?? [];

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a', 'b'], schema: SCHEMA });
    // Replica b refuses negative amounts (the source does not): it will stop in state failed.
    await w.replicas.withClient('replica_b', (c) => c.query('ALTER TABLE orders ADD CONSTRAINT positive CHECK (amount >= 0)'));
    bareDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgferry-temporal-bare-'));
    bare = await startDevServer({ dataDir: bareDir, port: await freePort(), uiPort: null, log: logger.child({ test: true }), timeoutMs: 90_000, searchAttributes: false });
    w.env.TEMPORAL_ADDRESS = bare.address; // every pgferry process of this test uses the bare server
    // Apply sessions of a second (default 30): the history below grows by one session a second, as it
    // would over half a minute each in production, so 25 of them show the upsert cadence quickly.
    w.env.PGFERRY_APPLY_SESSION_SECONDS = '1';
    client = new Client({ connection: await Connection.connect({ address: bare.address }) });
    expect(Object.keys(await registered(client)).filter((n) => NAMES.includes(n))).toEqual([]);
    up = await startUp(w);
  });

  afterAll(async () => {
    await up?.stop();
    await client?.connection.close();
    await bare?.stop();
    if (bareDir) fs.rmSync(bareDir, { recursive: true, force: true });
    await w?.teardown();
  });

  it('the dev server registers them at start; pgferry up registers them on a server that lacks them', async () => {
    const devClient = new Client({ connection: await Connection.connect({ address: w.temporal.address }) });
    try {
      const dev = await registered(devClient);
      expect([dev.PgferryState, dev.PgferryLagSeconds, dev.PgferrySource].map(Number)).toEqual([2, 4, 2]); // Keyword, Double, Keyword
    } finally {
      await devClient.connection.close();
    }
    expect(up.output()).toContain(`Temporal: registered search attributes PgferryState, PgferryLagSeconds, PgferrySource on namespace 'default'`);
    const now = await registered(client);
    expect([now.PgferryState, now.PgferryLagSeconds, now.PgferrySource].map(Number)).toEqual([2, 4, 2]);
  });

  it('lists the failed replica by PgferryState, as the Web UI does, and shows it running again after the fix', async () => {
    const [a, b, capture] = [replicaWorkflowId('a'), replicaWorkflowId('b'), captureWorkflowId(w.sourceName)];
    await w.source.withClient('app', async (c) => {
      await c.query(`INSERT INTO orders VALUES (1, 10, 'fine'), (2, 20, 'fine')`);
      await c.query(`INSERT INTO orders SELECT g, CASE WHEN g = 54 THEN -5 ELSE g END, 'bulk' FROM generate_series(3, 102) g`);
    });
    await waitForEqual(w, 'a', ['orders']);

    await listed(`PgferryState = 'failed'`, [b]);
    await listed(`PgferryState = 'running' AND WorkflowType = 'replicaWorkflow'`, [a]);
    await listed(`PgferrySource = '${w.sourceName}'`, [a, b, capture]);
    await listed(`PgferryState = 'running' AND WorkflowType = 'captureWorkflow'`, [capture]);
    // a is caught up: its lag shows 0 (a filter such as PgferryLagSeconds > 60 finds replicas far behind).
    // A stopped replica keeps the lag it had when it stopped (b may show 0 too): filter running ones.
    await listed(`PgferryLagSeconds = 0 AND PgferryState = 'running' AND WorkflowType = 'replicaWorkflow'`, [a]);
    expect(await list(`PgferryLagSeconds > 60`)).toEqual([]);

    // The memo says what each workflow is (the UI shows it on the workflow's page).
    const memoOf = async (id: string) => (await client.workflow.getHandle(id).describe()).memo?.description;
    expect(await memoOf(b)).toMatch(new RegExp(`^pgferry replica 'b' of source '${w.sourceName}': applies pgferry\\.${w.sourceName}\\.changes .*signals pause / resume`));
    expect(await memoOf(capture)).toMatch(new RegExp(`^pgferry capture of source '${w.sourceName}'`));

    // rowsPerSecond: a applied 102 changes within the last minute.
    const statusA = JSON.parse((await cli(w, ['replica', 'status', 'a', '--json'])).stdout);
    expect(statusA.rowsPerSecond).toBeGreaterThan(0);
    const statusB = JSON.parse((await cli(w, ['replica', 'status', 'b', '--json'])).stdout);
    expect(statusB.rowsPerSecond).toBe(0); // stopped

    // Pause and resume from the UI = send the signal pause / resume to the workflow.
    await client.workflow.getHandle(a).signal(pauseSignal);
    await listed(`PgferryState = 'paused'`, [a]);
    await client.workflow.getHandle(a).signal(resumeSignal);
    await listed(`PgferryState = 'running' AND WorkflowType = 'replicaWorkflow'`, [a]);

    // Fix b, resume it: it shows running again, and nothing is listed as failed.
    await w.replicas.withClient('replica_b', (c) => c.query('ALTER TABLE orders DROP CONSTRAINT positive'));
    expect((await cli(w, ['replica', 'resume', 'b'])).code).toBe(0);
    await waitForEqual(w, 'b', ['orders']);
    await listed(`PgferryState = 'failed'`, []);
    await listed(`PgferryState = 'running' AND WorkflowType = 'replicaWorkflow'`, [a, b]);

    // History stays small: attributes change on state changes (and lag buckets), not on every session.
    await waitFor('replica a to run 20 more apply sessions', async () => (await history(a)).filter((e) => e.activityTaskCompletedEventAttributes).length >= 25, 90_000);
    const eventsA = await history(a);
    const upserts = eventsA.filter((e) => e.upsertWorkflowSearchAttributesEventAttributes).length;
    const batches = eventsA.filter((e) => e.activityTaskCompletedEventAttributes).length;
    expect(upserts).toBeGreaterThan(0);
    expect(upserts, `${upserts} upserts in ${batches} sessions`).toBeLessThanOrEqual(8); // running, lag, paused, running, lag moves — not one per session
    expect(batches).toBeGreaterThanOrEqual(25);

    // The new workflow code replays its own histories (upserts included) deterministically.
    const workflowsPath = path.resolve(__dirname, '../../workflows/index.ts');
    for (const id of [a, b, capture]) {
      await Worker.runReplayHistory({ workflowsPath }, await client.workflow.getHandle(id).fetchHistory(), id);
    }
  });

  it('pgferry temporal setup succeeds, and again (idempotent)', async () => {
    for (let i = 0; i < 2; i++) {
      const r = await cli(w, ['temporal', 'setup']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain(`Temporal at ${bare.address}, namespace 'default': already registered: PgferryState, PgferryLagSeconds, PgferrySource`);
    }
    const json = await cli(w, ['temporal', 'setup', '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, namespace: 'default', added: [], present: NAMES });

    // A namespace without them: setup registers them, then finds them registered.
    const namespace = 'pgferry_setup';
    await client.workflowService.registerNamespace({ namespace, workflowExecutionRetentionPeriod: msToTs('1 day') });
    const env = { ...w.env, TEMPORAL_NAMESPACE: namespace };
    const first = await waitFor('the new namespace to be usable', async () => {
      const r = await runCli(['temporal', 'setup'], env);
      if (r.code !== 0 && !/no such namespace/.test(r.stderr)) throw new Error(`exit ${r.code}: ${r.stderr}`);
      return r.code === 0 ? r : null;
    });
    expect(first.stdout).toContain(`Temporal at ${bare.address}, namespace '${namespace}': registered search attributes PgferryState, PgferryLagSeconds, PgferrySource`);
    const again = await runCli(['temporal', 'setup'], env);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`namespace '${namespace}': already registered: PgferryState, PgferryLagSeconds, PgferrySource`);
  });

  it('pgferry temporal setup names the cluster when it cannot reach it', async () => {
    const port = await freePort();
    const r = await runCli(['temporal', 'setup'], { ...w.env, TEMPORAL_ADDRESS: `127.0.0.1:${port}` });
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(`Temporal at 127.0.0.1:${port}: cannot connect`);
  });
});
