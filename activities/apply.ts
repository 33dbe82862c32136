/**
 * The apply activities of replicaWorkflow (registered with the others in
 * index.ts): an apply session per replica, and the one-batch activity that
 * runs recorded before sessions still schedule.
 */
import { Context, log } from '@temporalio/activity';
import type pg from 'pg';
import type { ChannelModel } from 'amqplib';
import { replicaTables, replicaSchemaPolicy, replicaUrl } from '../src/config';
import { describeCause, isTransient } from '../src/errors';
import { applyBatch as runApplyBatch, BatchResult } from '../src/apply/apply-batch';
import { ApplyProgress, applySession as runApplySession, emptySession, SessionResult } from '../src/apply/apply-session';
import { useAsyncCommit, useReplicaRole } from '../src/apply/session';
import { poolConnect } from '../src/pg';
import { redactText } from '../src/redact';
import { applyBatchTimer, countError } from '../src/metrics/instruments';
import { addBatch, emptyRateWindow, ratePerSecond } from '../workflows/replica-metrics';
import type { Deps, ReplicaRef } from './index';

export const createApplyActivities = (deps: Deps, translate: (err: unknown) => never, secrets: string[]) => {
  const { config, resources } = deps;

  function batchOptions(replica: string, source: string, client: pg.PoolClient, rabbit: ChannelModel) {
    return {
      replica,
      source,
      client,
      rabbit,
      maxChanges: config.batch.maxChanges,
      maxWaitMs: config.batch.maxWaitMs,
      log: deps.logger.child({ replica }),
      tables: replicaTables(config, replica),
      schemaPolicy: replicaSchemaPolicy(config, replica),
    };
  }

  /** A pooled replica connection in apply's session settings for `work`; a connection that failed in transit is not pooled again. */
  async function withReplicaClient<T>(replica: string, source: string, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    let client: pg.PoolClient | undefined;
    let broken = false;
    try {
      const url = replicaUrl(config, replica);
      client = await poolConnect(`replica '${replica}'`, url, resources.pool(replica));
      await useReplicaRole(client); // once per pooled connection; prepareReplica said so if it may not
      await useAsyncCommit(client);
      return await work(client);
    } catch (err) {
      countError('apply', { replica, source });
      broken = isTransient(err);
      log.warn('apply failed', { replica, error: redactText(describeCause(err), secrets) });
      return translate(err);
    } finally {
      client?.release(broken);
    }
  }

  return {
    /**
     * A replica's apply session (src/apply/apply-session.ts): batches until the
     * workflow cancels it (pause), the worker shuts down, or batch.apply_session_seconds
     * have passed; it always ends at a batch boundary and returns what it applied.
     * Its heartbeats carry the live progress (`pgferry status` shows it).
     */
    async applySession({ replica, source }: ReplicaRef): Promise<SessionResult> {
      const ctx = Context.current();
      let live: ApplyProgress = { ...emptySession(), rowsPerSecond: null };
      let rate = emptyRateWindow();
      let batchStarted = Date.now();
      return withReplicaClient(replica, source, async (client) => {
        let timer = applyBatchTimer(replica, source);
        return runApplySession({
          ...batchOptions(replica, source, client, await resources.rabbit()),
          heartbeat: () => ctx.heartbeat(live),
          heartbeatMs: 250,
          signal: ctx.cancellationSignal,
          maxRunMs: config.batch.applySessionMs,
          onBatch: (total, batch) => {
            timer(); // pgferry_apply_batch_duration_seconds: committed batches
            const now = Date.now();
            rate = addBatch(rate, batchStarted, now, batch.changes);
            live = { ...total, rowsPerSecond: ratePerSecond(rate, now) };
            ctx.heartbeat(live);
            batchStarted = now;
            timer = applyBatchTimer(replica, source);
          },
        });
      });
    },

    /** One batch: what replica workflows recorded before apply sessions run (kept for their histories). */
    async applyBatch({ replica, source }: ReplicaRef): Promise<BatchResult> {
      const ctx = Context.current();
      const timer = applyBatchTimer(replica, source);
      return withReplicaClient(replica, source, async (client) => {
        const result = await runApplyBatch({ ...batchOptions(replica, source, client, await resources.rabbit()), heartbeat: () => ctx.heartbeat() });
        timer(); // pgferry_apply_batch_duration_seconds: successful batches
        return result;
      });
    },
  };
};
