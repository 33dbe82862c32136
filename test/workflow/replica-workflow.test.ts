import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { bundleWorkflowCode, Worker, WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { ApplicationFailure } from '@temporalio/common';
import { WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage } from '@temporalio/client';
import { execFileSync } from 'node:child_process';
import { findTemporalBinary } from '../../src/temporal/dev-server';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { createTestEnv } from '../helpers/test-env';
import { waitFor } from '../helpers/wait';
import { pauseSignal, replicaSetPausedUpdate, replicaStatusQuery, resumeSignal, captureStatusQuery, subscriberStatusQuery } from '../../workflows/messages';
import type { BatchResult } from '../../src/apply/apply-batch';
import type { SessionResult } from '../../src/apply/apply-session';
import { Context } from '@temporalio/activity';

/**
 * Workflow logic with mocked activities: pause/resume (signals, and the
 * setPaused update that answers once the state is reached), failure and
 * resume after a fix (the same for capture, replica and subscriber),
 * continue-as-new carrying state. Each run's history is saved
 * under test/replay/histories when PGFERRY_RECORD_HISTORIES=1, for the replay test.
 */
const HISTORIES = path.resolve(__dirname, '../replay/histories');

describe('replicaWorkflow and captureWorkflow (mocked activities)', () => {
  let env: TestWorkflowEnvironment;
  let bundle: WorkflowBundleWithSourceMap;

  beforeAll(async () => {
    env = await createTestEnv();
    bundle = await bundleWorkflowCode({ workflowsPath: path.resolve(__dirname, '../../workflows/index.ts') });
  });

  afterAll(async () => {
    await env?.teardown();
  });

  let n = 0;
  function ids() {
    n += 1;
    return { taskQueue: `tq-${n}-${Date.now()}`, workflowId: `wf-${n}-${Date.now()}` };
  }

  async function record(name: string, workflowId: string) {
    if (!process.env.PGFERRY_RECORD_HISTORIES) return;
    // The CLI's JSON export is the format Worker.runReplayHistory reads.
    const json = execFileSync(findTemporalBinary()!, ['workflow', 'show', '--workflow-id', workflowId, '--address', env.address, '--output', 'json'], { encoding: 'utf8' });
    fs.mkdirSync(HISTORIES, { recursive: true });
    fs.writeFileSync(path.join(HISTORIES, `${name}.json`), json);
  }

  function fakeBatches() {
    let lsn = 0x100;
    let applied = 0;
    const state = { calls: 0, fail: null as null | string };
    const applyBatch = async (): Promise<BatchResult> => {
      state.calls += 1;
      if (state.fail) throw ApplicationFailure.nonRetryable(state.fail, 'RejectedChangeError');
      lsn += 0x10;
      applied += 1;
      await new Promise((r) => setTimeout(r, 20));
      return { appliedLsn: `0/${lsn.toString(16).toUpperCase()}`, offset: applied, txns: 1, changes: 2, lastCommitTime: '2026-01-01T00:00:00.000001Z', caughtUp: true, skipped: 0 };
    };
    // Runs started now take apply sessions; a fake session is one batch (the loop below is the long kind).
    const applySession = async (): Promise<SessionResult> => ({ ...(await applyBatch()), batches: 1 });
    return { state, applyBatch, applySession, prepareReplica: async () => undefined };
  }

  /** Batches that, once the gate is closed (by the test, or at call number `holdAt`), are held before they commit until the test opens it. */
  function gatedBatches(holdAt?: number) {
    const fake = fakeBatches();
    const gate = { held: 0, committed: 0, open: () => {} };
    let opened: Promise<void> | null = null;
    const close = () => {
      opened = new Promise<void>((r) => (gate.open = () => {
        opened = null;
        r();
      }));
    };
    const applyBatch = async (): Promise<BatchResult> => {
      if (fake.state.calls + 1 === holdAt) close();
      if (opened) {
        gate.held += 1;
        await opened;
      }
      const done = await fake.applyBatch();
      gate.committed += 1;
      return done;
    };
    const applySession = async (): Promise<SessionResult> => ({ ...(await applyBatch()), batches: 1 });
    return { fake, gate, close, activities: { applyBatch, applySession, prepareReplica: fake.prepareReplica } };
  }

  /** Whether a promise is still unsettled after `ms`. */
  async function stillPending(p: Promise<unknown>, ms: number): Promise<boolean> {
    let settled = false;
    p.then(() => (settled = true), () => (settled = true));
    await new Promise((r) => setTimeout(r, ms));
    return !settled;
  }

  it('applies batches, pauses (no batch runs while paused), resumes, and reports status', async () => {
    const { taskQueue, workflowId } = ids();
    const fake = fakeBatches();
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: bundle, activities: fake });
    await worker.runUntil(async () => {
      const h = await env.client.workflow.start('replicaWorkflow', { taskQueue, workflowId, args: [{ replica: 'a', source: 'main', tables: [] }] });
      await waitFor('a few batches', async () => (await h.query(replicaStatusQuery)).batches >= 3, 20_000, 50);
      await h.signal(pauseSignal);
      await waitFor('paused state', async () => (await h.query(replicaStatusQuery)).state === 'paused', 5000, 50);
      const callsAtPause = fake.state.calls;
      const s = await h.query(replicaStatusQuery);
      await new Promise((r) => setTimeout(r, 500)); // a window in which a running loop would call applyBatch many times
      expect(fake.state.calls).toBe(callsAtPause);
      expect((await h.query(replicaStatusQuery)).appliedLsn).toBe(s.appliedLsn);
      await h.signal(resumeSignal);
      await waitFor('running again', async () => (await h.query(replicaStatusQuery)).batches > s.batches + 2, 10_000, 50);
      const after = await h.query(replicaStatusQuery);
      expect(after.state).toBe('running');
      expect(after.txns).toBe(after.batches);
      expect(after.changes).toBe(2 * after.batches);
      await h.terminate('test done');
      await record('replica-session-pause-resume', workflowId);
    });
  });

  it('a long apply session is cancelled by pause: it stops at a batch boundary within a second, and the answer holds its batches', async () => {
    const { taskQueue, workflowId } = ids();
    const fake = fakeBatches();
    const progress = { batches: 0, sessions: 0, returned: 0 };
    // The real session's shape: batch after batch, heartbeating, until cancelled (or a minute has passed).
    const applySession = async (): Promise<SessionResult> => {
      const ctx = Context.current();
      progress.sessions += 1;
      let total: SessionResult | null = null;
      const started = Date.now();
      while (!ctx.cancellationSignal.aborted && Date.now() - started < 60_000) {
        const b = await fake.applyBatch();
        total = { ...b, txns: (total?.txns ?? 0) + b.txns, changes: (total?.changes ?? 0) + b.changes, batches: (total?.batches ?? 0) + 1 };
        progress.batches += 1;
        ctx.heartbeat(total);
      }
      progress.returned += 1;
      return total!;
    };
    const worker = await Worker.create({
      connection: env.nativeConnection,
      taskQueue,
      workflowBundle: bundle,
      activities: { ...fake, applySession },
      maxHeartbeatThrottleInterval: '250 ms',
    });
    await worker.runUntil(async () => {
      const h = await env.client.workflow.start('replicaWorkflow', { taskQueue, workflowId, args: [{ replica: 'a', source: 'main', tables: [] }] });
      await waitFor('a session with a few batches', () => progress.batches >= 10, 20_000, 20);
      expect((await h.query(replicaStatusQuery)).batches).toBe(0); // the workflow learns of them when the session returns
      const asked = Date.now();
      const paused = await h.executeUpdate(replicaSetPausedUpdate, { args: [{ paused: true }] });
      const tookMs = Date.now() - asked;
      expect(paused.state).toBe('paused');
      expect(tookMs).toBeLessThan(2000);
      expect(progress.returned).toBe(1);
      expect(paused.batches).toBe(progress.batches); // every batch the session committed is in the answer
      expect(paused.txns).toBe(progress.batches);
      const calls = fake.state.calls;
      await new Promise((r) => setTimeout(r, 500)); // a window in which a running session would apply more
      expect(fake.state.calls).toBe(calls);
      const resumed = await h.executeUpdate(replicaSetPausedUpdate, { args: [{ paused: false }] });
      expect(resumed.state).toBe('running');
      await waitFor('a second session', () => progress.sessions === 2 && fake.state.calls > calls, 10_000, 20);
      await h.terminate('test done');
      await record('replica-session-cancelled', workflowId);
    });
  });

  it('a session that fails transiently while a pause stops it leaves the replica paused (not failed), and resume starts a new one', async () => {
    const { taskQueue, workflowId } = ids();
    const fake = fakeBatches();
    let sessions = 0;
    const applySession = async (): Promise<SessionResult> => {
      const ctx = Context.current();
      sessions += 1;
      if (sessions > 1) return fake.applySession();
      while (!ctx.cancellationSignal.aborted) {
        await fake.applyBatch();
        ctx.heartbeat();
      }
      throw ApplicationFailure.retryable('the replica connection was reset while stopping', 'UnavailableError');
    };
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: bundle, activities: { ...fake, applySession }, maxHeartbeatThrottleInterval: '250 ms' });
    await worker.runUntil(async () => {
      const h = await env.client.workflow.start('replicaWorkflow', { taskQueue, workflowId, args: [{ replica: 'a', source: 'main', tables: [] }] });
      await waitFor('the session running', () => fake.state.calls >= 5, 20_000, 20);
      const paused = await h.executeUpdate(replicaSetPausedUpdate, { args: [{ paused: true }] });
      expect(paused).toMatchObject({ state: 'paused', lastError: null });
      expect(sessions).toBe(1);
      await h.executeUpdate(replicaSetPausedUpdate, { args: [{ paused: false }] });
      await waitFor('a new session after the resume', () => sessions >= 2, 10_000, 20);
      expect((await h.query(replicaStatusQuery)).lastError).toBeNull();
      await h.terminate('test done');
    });
  });

  it('stops in state failed on a rejected change, without retrying, until resume; then continues', async () => {
    const { taskQueue, workflowId } = ids();
    const fake = fakeBatches();
    fake.state.fail = "replica 'a': insert on public.t key {\"id\":\"1\"} at source position 0/10 was rejected: boom [23505]";
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: bundle, activities: fake });
    await worker.runUntil(async () => {
      const h = await env.client.workflow.start('replicaWorkflow', { taskQueue, workflowId, args: [{ replica: 'a', source: 'main', tables: [] }] });
      const failed = await waitFor('failed state', async () => {
        const s = await h.query(replicaStatusQuery);
        return s.state === 'failed' ? s : null;
      }, 10_000, 50);
      expect(failed.lastError).toBe(fake.state.fail);
      expect(fake.state.calls).toBe(1); // non-retryable: no hot retry loop
      fake.state.fail = null;
      await h.signal(resumeSignal);
      await waitFor('applying again', async () => (await h.query(replicaStatusQuery)).batches >= 2, 10_000, 50);
      expect((await h.query(replicaStatusQuery)).lastError).toBeNull();
      await h.terminate('test done');
      await record('replica-session-fail-resume', workflowId);
    });
  });

  it('setPaused update: pause answers only once the batch in flight has committed, with state paused; resume answers with it running', async () => {
    const { taskQueue, workflowId } = ids();
    const { fake, gate, close, activities } = gatedBatches();
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: bundle, activities });
    await worker.runUntil(async () => {
      const h = await env.client.workflow.start('replicaWorkflow', { taskQueue, workflowId, args: [{ replica: 'a', source: 'main', tables: [] }] });
      await waitFor('a few batches', async () => (await h.query(replicaStatusQuery)).batches >= 2, 20_000, 50);
      close();
      await waitFor('a batch held in flight', () => gate.held >= 1, 10_000, 10);
      const update = await h.startUpdate(replicaSetPausedUpdate, { args: [{ paused: true }], waitForStage: WorkflowUpdateStage.ACCEPTED });
      const answer = update.result();
      expect(await stillPending(answer, 500)).toBe(true); // the batch has not committed: not paused yet
      expect((await h.query(replicaStatusQuery)).state).toBe('running');
      gate.open();
      const paused = await answer;
      expect(paused.state).toBe('paused');
      expect(paused.batches).toBe(gate.committed); // the batch that was in flight is in the answer
      const calls = fake.state.calls;
      await new Promise((r) => setTimeout(r, 300)); // a window in which a running loop would call applyBatch again
      expect(fake.state.calls).toBe(calls);

      const resumed = await h.executeUpdate(replicaSetPausedUpdate, { args: [{ paused: false }] });
      expect(resumed.state).toBe('running');
      await waitFor('applying again', async () => (await h.query(replicaStatusQuery)).batches > paused.batches + 1, 10_000, 50);
      await h.terminate('test done');
    });
  });

  it('setPaused update while failed: pause answers at once with failed and keeps it stopped; resume retries and answers running; bad input is rejected', async () => {
    const { taskQueue, workflowId } = ids();
    const fake = fakeBatches();
    fake.state.fail = "replica 'a': insert on public.t was rejected: boom [23505]";
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: bundle, activities: fake });
    await worker.runUntil(async () => {
      const h = await env.client.workflow.start('replicaWorkflow', { taskQueue, workflowId, args: [{ replica: 'a', source: 'main', tables: [] }] });
      await waitFor('failed state', async () => (await h.query(replicaStatusQuery)).state === 'failed', 10_000, 50);
      await expect(h.executeUpdate('setPaused', { args: [{ paused: 'yes' }] })).rejects.toBeInstanceOf(WorkflowUpdateFailedError);

      const paused = await h.executeUpdate(replicaSetPausedUpdate, { args: [{ paused: true }] });
      expect(paused).toMatchObject({ state: 'failed', lastError: fake.state.fail });
      await new Promise((r) => setTimeout(r, 300));
      expect(fake.state.calls).toBe(1); // still stopped: the pause released nothing

      fake.state.fail = null;
      const resumed = await h.executeUpdate(replicaSetPausedUpdate, { args: [{ paused: false }] });
      expect(resumed).toMatchObject({ state: 'running', lastError: null });
      // As with the signals, the resume cleared the pause sent while failed: it applies again.
      await waitFor('applying again', async () => (await h.query(replicaStatusQuery)).batches >= 2, 10_000, 50);
      await h.terminate('test done');
    });
  });

  it('setPaused update waiting when the run continues as new answers paused, and the next run starts paused', async () => {
    const { taskQueue, workflowId } = ids();
    const { fake, gate, activities } = gatedBatches(400); // the last batch of the first run
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: bundle, activities });
    await worker.runUntil(async () => {
      const h = await env.client.workflow.start('replicaWorkflow', { taskQueue, workflowId, args: [{ replica: 'a', source: 'main', tables: [] }] });
      const first = (await h.describe()).runId;
      await waitFor('the last batch of the run held in flight', () => gate.held >= 1, 120_000, 50);
      const update = await h.startUpdate(replicaSetPausedUpdate, { args: [{ paused: true }], waitForStage: WorkflowUpdateStage.ACCEPTED });
      gate.open();
      const paused = await update.result();
      expect(paused).toMatchObject({ state: 'paused', batches: 400 });
      const next = env.client.workflow.getHandle(workflowId);
      await waitFor('a second run', async () => (await next.describe()).runId !== first, 10_000, 50);
      expect(await next.query(replicaStatusQuery)).toMatchObject({ state: 'paused', batches: 400 });
      expect(fake.state.calls).toBe(400);
      const resumed = await next.executeUpdate(replicaSetPausedUpdate, { args: [{ paused: false }] });
      expect(resumed.state).toBe('running');
      await waitFor('applying in the second run', () => fake.state.calls > 401, 10_000, 50);
      await next.terminate('test done');
    });
  });

  /** Each workflow with an activity that fails permanently on its first call, then succeeds. */
  const stoppingWorkflows = [
    {
      workflow: 'replicaWorkflow',
      args: [{ replica: 'a', source: 'main', tables: [] }],
      status: (h: WorkflowHandle) => h.query(replicaStatusQuery),
      activities: (fail: () => void) => ({ prepareReplica: async () => undefined, applySession: async () => (fail(), fakeBatches().applySession()) }),
    },
    {
      workflow: 'captureWorkflow',
      args: [{ source: 'main' }],
      status: (h: WorkflowHandle) => h.query(captureStatusQuery),
      activities: (fail: () => void) => ({
        streamChanges: async () => {
          fail();
          await new Promise((r) => setTimeout(r, 100));
          return { confirmedLsn: '0/20', txns: 3, changes: 9, messages: 3, startedAt: '' };
        },
      }),
    },
    {
      workflow: 'subscriberWorkflow',
      args: [{ subscriber: 's', source: 'main', retry: { initialDelayMs: 10, maxDelayMs: 20 } }],
      status: (h: WorkflowHandle) => h.query(subscriberStatusQuery),
      activities: (fail: () => void) => ({
        deliverSubscriberBatch: async () => {
          fail();
          await new Promise((r) => setTimeout(r, 20));
          return { position: { lsn: '0/10', offset: 1 }, txns: 1, changes: 2, totalTxns: 1, totalChanges: 2, lastCommitTime: null, caughtUp: true };
        },
      }),
    },
  ];
  const stopCases = stoppingWorkflows.flatMap((w) => [
    { ...w, type: 'GapError', expected: 'needs_resync' },
    { ...w, type: 'ConfigError', expected: 'failed' },
  ]);

  it.each(stopCases)('the failure block is the same everywhere: $workflow stops in $expected on $type, calls nothing until resume, then clears the error and runs', async (c) => {
    const { taskQueue, workflowId } = ids();
    const message = `${c.workflow}: permanent ${c.type}`;
    let calls = 0;
    const fail = () => {
      calls += 1;
      if (calls === 1) throw ApplicationFailure.nonRetryable(message, c.type);
    };
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: bundle, activities: c.activities(fail) });
    await worker.runUntil(async () => {
      const h = await env.client.workflow.start(c.workflow, { taskQueue, workflowId, args: c.args });
      const stopped = await waitFor(`${c.expected} state`, async () => {
        const s = await c.status(h);
        return s.state === c.expected ? s : null;
      }, 10_000, 50);
      expect(stopped.lastError).toBe(message);
      await new Promise((r) => setTimeout(r, 300)); // a stopped workflow does not call again by itself
      expect(calls).toBe(1);
      await h.signal(resumeSignal);
      const running = await waitFor('running after resume', async () => {
        const s = await c.status(h);
        return s.state === 'running' && calls >= 2 ? s : null;
      }, 10_000, 50);
      expect(running.lastError).toBeNull();
      await h.terminate('test done');
    });
  });

  it('continues as new before history grows, carrying position, counts and pause', async () => {
    const { taskQueue, workflowId } = ids();
    const fake = fakeBatches();
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: bundle, activities: fake });
    await worker.runUntil(async () => {
      const h = await env.client.workflow.start('replicaWorkflow', { taskQueue, workflowId, args: [{ replica: 'a', source: 'main', tables: [] }] });
      const first = (await h.describe()).runId;
      await waitFor('a second run', async () => (await env.client.workflow.getHandle(workflowId).describe()).runId !== first, 120_000, 200);
      const s = await env.client.workflow.getHandle(workflowId).query(replicaStatusQuery);
      expect(s.batches).toBeGreaterThanOrEqual(400);
      expect(s.txns).toBe(s.batches);
      await env.client.workflow.getHandle(workflowId).terminate('test done');
    });
  });

  it('starts from {"replica": name} alone: the worker resolves source and tables, again after continue-as-new, and the input stays one field', async () => {
    const { taskQueue, workflowId } = ids();
    const fake = fakeBatches();
    const resolved: string[] = [];
    const prepared: unknown[] = [];
    const activities = {
      ...fake,
      resolveReplica: async ({ replica }: { replica: string }) => {
        resolved.push(replica);
        return { source: 'main', tables: [{ schema: 'public', table: 'orders' }], searchAttributes: false, description: 'd' };
      },
      prepareReplica: async (input: unknown) => void prepared.push(input),
    };
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: bundle, activities });
    await worker.runUntil(async () => {
      const h = await env.client.workflow.start('replicaWorkflow', { taskQueue, workflowId, args: [{ replica: 'a' }] });
      const first = (await h.describe()).runId;
      await waitFor('a second run', async () => (await env.client.workflow.getHandle(workflowId).describe()).runId !== first, 120_000, 200);
      const next = env.client.workflow.getHandle(workflowId);
      await waitFor('the second run to resolve', () => resolved.length >= 2, 20_000, 50);
      const s = await next.query(replicaStatusQuery);
      expect(s.source).toBe('main');
      expect(s.batches).toBeGreaterThanOrEqual(400);
      expect(resolved).toEqual(['a', 'a']);
      expect(prepared[0]).toEqual({ replica: 'a', source: 'main', tables: [{ schema: 'public', table: 'orders' }] });
      // The next run's input is still the name alone (plus the carried status), not the resolved configuration.
      const started = (await next.fetchHistory()).events?.[0]?.workflowExecutionStartedEventAttributes;
      const input = JSON.parse(Buffer.from(started!.input!.payloads![0].data as Uint8Array).toString('utf8'));
      expect(Object.keys(input).sort()).toEqual(['rate', 'replica', 'status']);
      await next.terminate('test done');
      await record('replica-one-field-start', workflowId);
    });
  });

  it('a one-field start of an unknown replica fails the workflow at once with the worker\'s message', async () => {
    const { taskQueue, workflowId } = ids();
    const message = "replica 'x' is not configured on this worker (source 'main'); it knows 'a', 'b'. Start one of those, or add 'x' under replicas: in the worker's configuration and restart it";
    const activities = { ...fakeBatches(), resolveReplica: async () => { throw ApplicationFailure.nonRetryable(message, 'ConfigError'); } };
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: bundle, activities });
    await worker.runUntil(async () => {
      const h = await env.client.workflow.start('replicaWorkflow', { taskQueue, workflowId, args: [{ replica: 'x' }] });
      const err = await h.result().then(() => null, (e: Error & { cause?: ApplicationFailure }) => e);
      expect(err?.cause?.message).toBe(message);
      expect(err?.cause?.type).toBe('ConfigError');
    });
  });

  it('a one-field start answers status and setPaused while its configuration is being resolved; a later run that cannot resolve stops in failed until resume', async () => {
    const { taskQueue, workflowId } = ids();
    const fake = fakeBatches();
    let release: () => void = () => undefined;
    let held: Promise<void> | null = new Promise<void>((r) => (release = r));
    let refuse: string | null = null;
    const resolveReplica = async () => {
      if (held) await held;
      if (refuse) throw ApplicationFailure.nonRetryable(refuse, 'SourceError');
      return { source: 'main', tables: [], searchAttributes: false, description: 'd' };
    };
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: bundle, activities: { ...fake, resolveReplica } });
    await worker.runUntil(async () => {
      const h = await env.client.workflow.start('replicaWorkflow', { taskQueue, workflowId, args: [{ replica: 'a' }] });
      // Resolving (the worker's source is slow): the status answers, and a pause is taken, not refused.
      const early = await waitFor('the status while resolving', () => h.query(replicaStatusQuery), 10_000, 50);
      expect(early.state).toBe('starting');
      const pausing = h.executeUpdate(replicaSetPausedUpdate, { args: [{ paused: true }] });
      expect(await stillPending(pausing, 300)).toBe(true);
      release();
      held = null;
      expect((await pausing).state).toBe('paused');
      expect(fake.state.calls).toBe(0);
      expect((await h.executeUpdate(replicaSetPausedUpdate, { args: [{ paused: false }] })).state).toBe('running');
      await waitFor('batches after the resume', async () => (await h.query(replicaStatusQuery)).batches >= 2, 10_000, 50);
      await h.terminate('test done');

      // A later run (continued as new, so carrying its status) whose configuration cannot be resolved stops in
      // failed, resumable, instead of failing the workflow.
      refuse = "source 'main': password authentication failed; fix sources[].url";
      const carried = { ...(await h.query(replicaStatusQuery)), state: 'running' as const };
      const later = await env.client.workflow.start('replicaWorkflow', { taskQueue, workflowId: `${workflowId}-later`, args: [{ replica: 'a', status: carried }] });
      const stopped = await waitFor('the later run to stop in failed', async () => {
        const v = await later.query(replicaStatusQuery);
        return v.state === 'failed' ? v : null;
      }, 10_000, 50);
      expect(stopped.lastError).toBe(refuse);
      refuse = null;
      await later.signal(resumeSignal);
      await waitFor('the later run to apply after the fix', async () => (await later.query(replicaStatusQuery)).state === 'running', 10_000, 50);
      await later.terminate('test done');
    });
  });

  it('captureWorkflow reports a lost slot as needs_resync with the reason, and retries on resume', async () => {
    const { taskQueue, workflowId } = ids();
    let calls = 0;
    const activities = {
      streamChanges: async () => {
        calls += 1;
        if (calls === 1) throw ApplicationFailure.nonRetryable("source 'main': replication slot pgferry_main does not exist", 'GapError');
        await new Promise((r) => setTimeout(r, 100));
        return { confirmedLsn: '0/20', txns: 3, changes: 9, messages: 3, startedAt: '' };
      },
    };
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: bundle, activities });
    await worker.runUntil(async () => {
      const h = await env.client.workflow.start('captureWorkflow', { taskQueue, workflowId, args: [{ source: 'main' }] });
      const s = await waitFor('capture needing a resync', async () => {
        const v = await h.query(captureStatusQuery);
        return v.state === 'needs_resync' ? v : null;
      }, 10_000, 50);
      expect(s.lastError).toMatch(/does not exist/);
      await h.signal(resumeSignal);
      await waitFor('capture running and counting', async () => (await h.query(captureStatusQuery)).txns >= 3, 10_000, 50);
      await h.terminate('test done');
      await record('capture-fail-resume', workflowId);
    });
  });

  it('captureWorkflow: a resume that arrives as capture fails (up re-created the slot meanwhile) releases it, not lost (defect J)', async () => {
    const { taskQueue, workflowId } = ids();
    let calls = 0;
    let signalled!: () => void;
    const sent = new Promise<void>((r) => (signalled = r));
    const activities = {
      streamChanges: async () => {
        calls += 1;
        if (calls === 1) {
          await sent; // the resume is on its way while this run fails
          await new Promise((r) => setTimeout(r, 200));
          throw ApplicationFailure.nonRetryable("source 'main': replication slot pgferry_main does not exist", 'GapError');
        }
        await new Promise((r) => setTimeout(r, 100));
        return { confirmedLsn: '0/20', txns: 3, changes: 9, messages: 3, startedAt: '' };
      },
    };
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: bundle, activities });
    await worker.runUntil(async () => {
      const h = await env.client.workflow.start('captureWorkflow', { taskQueue, workflowId, args: [{ source: 'main' }] });
      await waitFor('capture running', () => calls >= 1, 10_000, 20);
      await h.signal(resumeSignal);
      signalled();
      await waitFor('capture running again without a second resume', async () => (await h.query(captureStatusQuery)).txns >= 3, 10_000, 50);
      expect(calls).toBeGreaterThanOrEqual(2);
      await h.terminate('test done');
    });
  });
});
