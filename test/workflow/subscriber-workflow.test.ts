import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { bundleWorkflowCode, Worker, WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { ApplicationFailure } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { findTemporalBinary } from '../../src/temporal/dev-server';
import { createTestEnv } from '../helpers/test-env';
import { waitFor } from '../helpers/wait';
import { WorkflowUpdateStage } from '@temporalio/client';
import { pauseSignal, resumeSignal, subscriberSetPausedUpdate, subscriberStatusQuery } from '../../workflows/messages';
import type { SessionResult } from '../../src/subscribe/deliver';

/**
 * subscriberWorkflow with a mocked deliverSubscriberBatch: handler failures
 * are retried by Temporal with the subscriber's backoff until the activity
 * gives up (HandlerFailedError), then the workflow waits in `failed` until
 * resume; pause holds batches, and the setPaused update answers once it
 * does (or at once while failed). The history is saved for the replay test
 * with PGFERRY_RECORD_HISTORIES=1.
 */
const HISTORIES = path.resolve(__dirname, '../replay/histories');

describe('subscriberWorkflow (mocked activity)', () => {
  let env: TestWorkflowEnvironment;
  let bundle: WorkflowBundleWithSourceMap;

  beforeAll(async () => {
    env = await createTestEnv();
    bundle = await bundleWorkflowCode({ workflowsPath: path.resolve(__dirname, '../../workflows/index.ts') });
  });

  afterAll(async () => {
    await env?.teardown();
  });

  it('retries a failing handler with backoff, stops in failed naming the change, resumes, and pauses between batches', async () => {
    const taskQueue = `tq-sub-${Date.now()}`;
    const workflowId = `wf-sub-${Date.now()}`;
    const state = { calls: 0, failUntilAttempt: 0, total: 0 };
    const message = "subscriber 's': the handler failed 3 times on insert of public.t key {\"id\":\"7\"} (change main/0/70/0, source position 0/70, committed …): boom; fix the handler …";
    const deliverSubscriberBatch = async (): Promise<SessionResult> => {
      state.calls += 1;
      if (state.failUntilAttempt) {
        const { Context } = await import('@temporalio/activity');
        const attempt = Context.current().info.attempt;
        if (attempt < state.failUntilAttempt) throw ApplicationFailure.retryable('boom', 'HandlerRetry');
        throw ApplicationFailure.nonRetryable(message, 'HandlerFailedError');
      }
      state.total += 1;
      await new Promise((r) => setTimeout(r, 20));
      return { position: { lsn: `0/${state.total}0`, offset: state.total }, txns: 1, changes: 2, totalTxns: state.total, totalChanges: 2 * state.total, lastCommitTime: null, caughtUp: true };
    };
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: bundle, activities: { deliverSubscriberBatch } });
    await worker.runUntil(async () => {
      const h = await env.client.workflow.start('subscriberWorkflow', {
        taskQueue,
        workflowId,
        args: [{ subscriber: 's', source: 'main', retry: { initialDelayMs: 10, maxDelayMs: 20 } }],
      });
      await waitFor('a few batches', async () => (await h.query(subscriberStatusQuery)).batches >= 3, 20_000, 50);

      state.failUntilAttempt = 3;
      const callsBefore = state.calls;
      const failed = await waitFor('failed state', async () => {
        const s = await h.query(subscriberStatusQuery);
        return s.state === 'failed' ? s : null;
      }, 20_000, 50);
      expect(failed.lastError).toBe(message);
      expect(state.calls - callsBefore).toBe(3); // two retries, then the activity gave up: no loop
      const stuck = state.calls;
      await new Promise((r) => setTimeout(r, 300)); // a failed subscriber does not call again by itself
      expect(state.calls).toBe(stuck);

      state.failUntilAttempt = 0;
      await h.signal(resumeSignal);
      await waitFor('delivering again', async () => (await h.query(subscriberStatusQuery)).batches >= failed.batches + 2, 10_000, 50);
      expect((await h.query(subscriberStatusQuery)).lastError).toBeNull();

      await h.signal(pauseSignal);
      await waitFor('paused', async () => (await h.query(subscriberStatusQuery)).state === 'paused', 10_000, 50);
      const atPause = state.calls;
      await new Promise((r) => setTimeout(r, 300));
      expect(state.calls).toBe(atPause);
      await h.signal(resumeSignal);
      await waitFor('running again', async () => state.calls > atPause + 1, 10_000, 50);
      const s = await h.query(subscriberStatusQuery);
      expect(s).toMatchObject({ subscriber: 's', source: 'main', state: 'running' });
      expect(s.txns).toBe(s.batches); // the positions row's count, as the activity reported it
      expect(s.changes).toBe(2 * s.batches);
      await h.terminate('test done');
      if (process.env.PGFERRY_RECORD_HISTORIES) {
        const json = execFileSync(findTemporalBinary()!, ['workflow', 'show', '--workflow-id', workflowId, '--address', env.address, '--output', 'json'], { encoding: 'utf8' });
        fs.mkdirSync(HISTORIES, { recursive: true });
        fs.writeFileSync(path.join(HISTORIES, 'subscriber-fail-resume.json'), json);
      }
    });
  });

  /** A deliverSubscriberBatch that fails (permanently) while `fail` is set, and holds its batch while `hold` is set. */
  function fakeDelivery() {
    const state = { calls: 0, total: 0, held: 0, fail: null as string | null, hold: null as Promise<void> | null };
    const deliverSubscriberBatch = async (): Promise<SessionResult> => {
      state.calls += 1;
      if (state.fail) throw ApplicationFailure.nonRetryable(state.fail, 'HandlerFailedError');
      if (state.hold) {
        state.held += 1;
        await state.hold;
      }
      state.total += 1;
      await new Promise((r) => setTimeout(r, 20));
      return { position: { lsn: `0/${state.total}0`, offset: state.total }, txns: 1, changes: 2, totalTxns: state.total, totalChanges: 2 * state.total, lastCommitTime: null, caughtUp: true };
    };
    return { state, deliverSubscriberBatch };
  }

  function start(taskQueue: string, workflowId: string) {
    return env.client.workflow.start('subscriberWorkflow', { taskQueue, workflowId, args: [{ subscriber: 's', source: 'main', retry: { initialDelayMs: 10, maxDelayMs: 20 } }] });
  }

  it('setPaused update: pause answers only once the batch in flight has finished, with state paused; resume answers with it running', async () => {
    const taskQueue = `tq-sub-upd-${Date.now()}`;
    const workflowId = `wf-sub-upd-${Date.now()}`;
    const fake = fakeDelivery();
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: bundle, activities: { deliverSubscriberBatch: fake.deliverSubscriberBatch } });
    await worker.runUntil(async () => {
      const h = await start(taskQueue, workflowId);
      await waitFor('a few batches', async () => (await h.query(subscriberStatusQuery)).batches >= 2, 20_000, 50);
      let release!: () => void;
      fake.state.hold = new Promise<void>((r) => (release = r));
      await waitFor('a batch held in flight', () => fake.state.held >= 1, 10_000, 10);
      const update = await h.startUpdate(subscriberSetPausedUpdate, { args: [{ paused: true }], waitForStage: WorkflowUpdateStage.ACCEPTED });
      let answered = false;
      const answer = update.result().finally(() => (answered = true));
      await new Promise((r) => setTimeout(r, 500));
      expect(answered).toBe(false); // the batch in flight has not finished: not paused yet
      fake.state.hold = null;
      release();
      const paused = await answer;
      expect(paused.state).toBe('paused');
      expect(paused.batches).toBe(fake.state.total); // the batch that was in flight is in the answer
      const calls = fake.state.calls;
      await new Promise((r) => setTimeout(r, 300));
      expect(fake.state.calls).toBe(calls);

      const resumed = await h.executeUpdate(subscriberSetPausedUpdate, { args: [{ paused: false }] });
      expect(resumed.state).toBe('running');
      await waitFor('delivering again', () => fake.state.calls > calls + 1, 10_000, 50);
      await h.terminate('test done');
    });
  });

  it('setPaused update while failed: pause answers at once with failed and keeps it stopped; resume retries and answers running', async () => {
    const taskQueue = `tq-sub-fail-${Date.now()}`;
    const workflowId = `wf-sub-fail-${Date.now()}`;
    const fake = fakeDelivery();
    fake.state.fail = "subscriber 's': the handler failed 3 times on insert of public.t: boom";
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: bundle, activities: { deliverSubscriberBatch: fake.deliverSubscriberBatch } });
    await worker.runUntil(async () => {
      const h = await start(taskQueue, workflowId);
      await waitFor('failed state', async () => (await h.query(subscriberStatusQuery)).state === 'failed', 10_000, 50);
      const paused = await h.executeUpdate(subscriberSetPausedUpdate, { args: [{ paused: true }] });
      expect(paused).toMatchObject({ state: 'failed', lastError: fake.state.fail });
      await new Promise((r) => setTimeout(r, 300));
      expect(fake.state.calls).toBe(1);

      fake.state.fail = null;
      const resumed = await h.executeUpdate(subscriberSetPausedUpdate, { args: [{ paused: false }] });
      expect(resumed).toMatchObject({ state: 'running', lastError: null });
      await waitFor('delivering again', async () => (await h.query(subscriberStatusQuery)).batches >= 2, 10_000, 50);
      await h.terminate('test done');
    });
  });
  it('starts from {"subscriber": name} alone: the worker tells its source and retry spacing; an unknown one fails at once', async () => {
    const taskQueue = `tq-sub-one-${Date.now()}`;
    const asked: string[] = [];
    const describeSubscriber = async ({ subscriber }: { subscriber: string }) => {
      asked.push(subscriber);
      if (subscriber !== 'audit') throw ApplicationFailure.nonRetryable(`subscriber '${subscriber}' is not defined by the worker of task queue ${taskQueue} (it defines 'audit')`, 'UnknownSubscriber');
      return { source: 'main', retry: { initialDelayMs: 10, maxDelayMs: 20 } };
    };
    let total = 0;
    const deliverSubscriberBatch = async (): Promise<SessionResult> => {
      total += 1;
      await new Promise((r) => setTimeout(r, 20));
      return { position: { lsn: `0/${total}0`, offset: total }, txns: 1, changes: 1, totalTxns: total, totalChanges: total, lastCommitTime: null, caughtUp: true };
    };
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle: bundle, activities: { describeSubscriber, deliverSubscriberBatch } });
    await worker.runUntil(async () => {
      const h = await env.client.workflow.start('subscriberWorkflow', { taskQueue, workflowId: `wf-sub-one-${Date.now()}`, args: [{ subscriber: 'audit' }] });
      const s = await waitFor('batches delivered', async () => {
        const v = await h.query(subscriberStatusQuery);
        return v.batches >= 3 ? v : null;
      }, 20_000, 50);
      expect(s.source).toBe('main');
      expect(s.state).toBe('running');
      await h.terminate('test done');

      const bad = await env.client.workflow.start('subscriberWorkflow', { taskQueue, workflowId: `wf-sub-bad-${Date.now()}`, args: [{ subscriber: 'nope' }] });
      const err = await bad.result().then(() => null, (e: Error & { cause?: Error }) => e);
      expect(err?.cause?.message).toBe(`subscriber 'nope' is not defined by the worker of task queue ${taskQueue} (it defines 'audit')`);
      expect(asked).toEqual(['audit', 'nope']);
    });
  });
});
