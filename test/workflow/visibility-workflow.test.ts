import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client, Connection, WorkflowIdConflictPolicy } from '@temporalio/client';
import { bundleWorkflowCode, NativeConnection, Worker, WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { DevServer, startDevServer } from '../../src/temporal/dev-server';
import { logger } from '../../src/logger';
import { replicaVisibility, startVisible } from '../../src/temporal/search-attributes';
import { PGFERRY_LAG_SECONDS, PGFERRY_SOURCE, PGFERRY_STATE, replicaStatusQuery } from '../../workflows/messages';
import type { SessionResult } from '../../src/apply/apply-session';
import { freePort } from '../helpers/ports';
import { waitFor } from '../helpers/wait';

/**
 * The replica workflow's search attributes and memo with mocked activities,
 * on a dev server that has pgferry's attributes: they survive continue-as-new,
 * the lag is shown without an event per batch, and a workflow started without
 * them (before registration) shows them once told to.
 */
describe('replicaWorkflow search attributes (mocked activities)', () => {
  let server: DevServer;
  let dataDir: string;
  let client: Client;
  let native: NativeConnection;
  let bundle: WorkflowBundleWithSourceMap;
  let n = 0;
  const ids = () => ({ taskQueue: `sa-${++n}-${Date.now()}`, workflowId: `sa-wf-${n}-${Date.now()}` });

  /** Batches that find more waiting, whose last transaction committed 30 s before. */
  const behind = () => {
    let i = 0;
    return {
      prepareReplica: async () => undefined,
      applySession: async (): Promise<SessionResult> => {
        i += 1;
        await new Promise((r) => setTimeout(r, 5));
        return { appliedLsn: `0/${(0x100 + i).toString(16)}`, offset: i, txns: 1, changes: 3, lastCommitTime: new Date(Date.now() - 30_000).toISOString(), caughtUp: false, skipped: 0, batches: 1 };
      },
    };
  };

  beforeAll(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgferry-temporal-sa-'));
    server = await startDevServer({ dataDir, port: await freePort(), uiPort: null, log: logger.child({ test: true }), timeoutMs: 90_000 });
    client = new Client({ connection: await Connection.connect({ address: server.address }) });
    native = await NativeConnection.connect({ address: server.address });
    bundle = await bundleWorkflowCode({ workflowsPath: path.resolve(__dirname, '../../workflows/index.ts') });
  });

  afterAll(async () => {
    await native?.close();
    await client?.connection.close();
    await server?.stop();
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('keeps memo and attributes across continue-as-new, with few upserts over 400 batches', async () => {
    const { taskQueue, workflowId } = ids();
    const worker = await Worker.create({ connection: native, taskQueue, workflowBundle: bundle, activities: behind() });
    await worker.runUntil(async () => {
      const h = await startVisible(client, 'replicaWorkflow', { taskQueue, workflowId, args: [{ replica: 'a', source: 'main', tables: [] }] }, replicaVisibility(true, 'a', 'main'));
      const first = (await h.describe()).runId;
      const second = await waitFor('a second run', async () => {
        const d = await client.workflow.getHandle(workflowId).describe();
        return d.runId !== first ? d : null;
      }, 120_000, 200);
      expect(second.memo?.description).toMatch(/^pgferry replica 'a' of source 'main'/);
      expect(second.typedSearchAttributes.get(PGFERRY_SOURCE)).toBe('main');
      expect(second.typedSearchAttributes.get(PGFERRY_STATE)).toBe('running');
      const lag = second.typedSearchAttributes.get(PGFERRY_LAG_SECONDS);
      expect(lag).toBeGreaterThanOrEqual(29);
      expect(lag).toBeLessThan(60);

      const events = (await client.workflow.getHandle(workflowId, first).fetchHistory()).events ?? [];
      const batches = events.filter((e) => e.activityTaskCompletedEventAttributes).length;
      const upserts = events.filter((e) => e.upsertWorkflowSearchAttributesEventAttributes).length;
      expect(batches).toBeGreaterThanOrEqual(400);
      expect(upserts, `${upserts} upserts in ${batches} batches`).toBeLessThanOrEqual(3); // running (+ lag), nothing per batch
      const status = await client.workflow.getHandle(workflowId).query(replicaStatusQuery);
      expect(status.rowsPerSecond).toBeGreaterThan(0);
      await client.workflow.getHandle(workflowId).terminate('test done');
    });
  });

  it('a workflow started without them upserts nothing, until pgferry up (startVisible) tells it to show them', async () => {
    const { taskQueue, workflowId } = ids();
    const worker = await Worker.create({ connection: native, taskQueue, workflowBundle: bundle, activities: behind() });
    await worker.runUntil(async () => {
      // As started by an older pgferry: no memo, no search attributes.
      const h = await client.workflow.start('replicaWorkflow', { taskQueue, workflowId, args: [{ replica: 'b', source: 'main', tables: [] }] });
      await waitFor('a few batches', async () => (await h.query(replicaStatusQuery)).batches >= 5, 20_000, 50);
      const before = (await h.fetchHistory()).events ?? [];
      // patched() (workflows/replica.ts) records its patch in Temporal's own TemporalChangeVersion attribute: not one of ours.
      const ours = (e: (typeof before)[number]) =>
        Object.keys(e.upsertWorkflowSearchAttributesEventAttributes?.searchAttributes?.indexedFields ?? {}).some((k) => k !== 'TemporalChangeVersion');
      expect(before.filter((e) => ours(e) || e.workflowPropertiesModifiedEventAttributes)).toEqual([]);

      await startVisible(client, 'replicaWorkflow', { taskQueue, workflowId, args: [{ replica: 'b', source: 'main', tables: [] }], workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING }, replicaVisibility(true, 'b', 'main'));
      const d = await waitFor('the attributes and memo', async () => {
        const d = await h.describe();
        return d.typedSearchAttributes.get(PGFERRY_STATE) === 'running' && d.memo?.description ? d : null;
      }, 20_000, 100);
      expect(d.runId).toBe((await h.describe()).runId); // the same run, not a new workflow
      expect(d.typedSearchAttributes.get(PGFERRY_SOURCE)).toBe('main');
      expect(d.memo?.description).toMatch(/^pgferry replica 'b' of source 'main'/);
      await h.terminate('test done');
    });
  });
});
