/**
 * Thin adapters from Temporal to src/: inputs are names, never connection
 * strings; each activity resolves names through the worker's own config,
 * calls src/, and translates errors (permanent → non-retryable failure with
 * the error's class as type; anything else → retried with backoff).
 */
import { ApplicationFailure, Context, log } from '@temporalio/activity';
import { Config, replicaUrl, requireSourceUrl } from '../src/config';
import { PgferryError, classifyError, describeCause } from '../src/errors';
import type { CaptureProgress } from '../src/capture/contract';
import { captureMode } from '../src/capture/mode';
import type { TableRef } from '../src/tables';
import { checkNoUnfinishedCopy, prepareTarget } from '../src/apply/target';
import { replicaRoleAdvice, useReplicaRole } from '../src/apply/session';
import { countError } from '../src/metrics/instruments';
import { createApplyActivities } from './apply';
import { declareStream } from '../src/changelog/stream';
import { poolConnect, withClient } from '../src/pg';
import { capturesSchemaChanges } from '../src/capture/schema-capture';
import type { WorkerResources } from '../src/temporal/resources';
import { redactText } from '../src/redact';
import { addReplica } from '../src/snapshot/add';
import type { SnapshotResult } from '../workflows/messages';
import type { Logger } from '../src/logger';

export interface Deps {
  config: Config;
  logger: Logger;
  resources: WorkerResources;
}

export interface SourceRef {
  source: string;
}
export interface ReplicaRef {
  replica: string;
  source: string;
}

export const createActivities = (deps: Deps) => {
  const { config, resources } = deps;
  const secrets = [config.source.url ?? '', config.rabbitmqUrl, ...config.replicas.map((r) => r.url)].filter(Boolean);

  /** Errors crossing into Temporal: one clean line, secrets removed, retryable or not. */
  const translate = (err: unknown): never => {
    const message = redactText(err instanceof PgferryError ? err.message : describeCause(err), secrets);
    const type = err instanceof Error ? err.name : 'Error';
    const kind = classifyError(err);
    if (kind === 'permanent') throw ApplicationFailure.nonRetryable(message, type);
    if (kind !== 'transient') log.warn('unexpected error, retrying', { error: message, type });
    throw ApplicationFailure.retryable(message, type);
  };

  return {
    /** Long-running: streams until cancelled or for ~15 minutes, heartbeating its confirmed position. */
    async streamChanges({ source }: SourceRef): Promise<CaptureProgress> {
      const ctx = Context.current();
      try {
        return await captureMode(config).run({
          source,
          url: requireSourceUrl(config),
          rabbitUrl: config.rabbitmqUrl,
          chunkChanges: config.batch.chunkChanges,
          chunkBytes: config.batch.chunkBytes,
          maxMessageBytes: config.batch.maxMessageBytes,
          runs: { txns: config.batch.runTxns, bytes: config.batch.runBytes },
          retention: config.stream,
          signal: ctx.cancellationSignal,
          onProgress: (p) => ctx.heartbeat(p),
          maxRunMs: config.batch.captureRunMs,
          heartbeatMs: config.source.heartbeatMs,
          log: deps.logger.child({ source }),
        });
      } catch (err) {
        if (!ctx.cancellationSignal.aborted) countError('capture', { source });
        log.warn('capture failed', { source, error: redactText(describeCause(err), secrets) });
        return translate(err);
      }
    },

    async prepareReplica({ replica, source, tables }: ReplicaRef & { tables: TableRef[] }): Promise<void> {
      try {
        const url = replicaUrl(config, replica);
        const client = await poolConnect(`replica '${replica}'`, url, resources.pool(replica));
        try {
          const schemaChangesCaptured = await withClient(`source '${source}'`, requireSourceUrl(config), capturesSchemaChanges).catch(() => false);
          for (const warning of await prepareTarget(client, replica, tables, { schemaChangesCaptured })) log.warn(warning, { replica });
          await checkNoUnfinishedCopy(client, replica);
          if (!(await useReplicaRole(client))) log.warn(await replicaRoleAdvice(client, replica), { replica });
        } finally {
          client.release();
        }
        const conn = await resources.rabbit();
        await declareStream(conn, source, config.stream);
      } catch (err) {
        log.error('replica check failed', { replica, error: redactText(describeCause(err), secrets) });
        return translate(err);
      }
    },

    /** `replica add --snapshot`: copy, heartbeating table progress; a retried attempt first empties what a failed one claimed and partly filled. */
    async copySnapshot({ replica, createTables, parallel }: ReplicaRef & { createTables: boolean; parallel: number }): Promise<SnapshotResult> {
      const ctx = Context.current();
      try {
        const r = await addReplica(config, replica, {
          createTables,
          parallel,
          say: (line) => log.info(line, { replica }),
          onProgress: (tables) => ctx.heartbeat(tables),
        });
        return {
          position: r.position,
          offset: r.offset,
          rows: r.tables.reduce((n, t) => n + t.rows, 0),
          bytes: r.tables.reduce((n, t) => n + t.bytes, 0),
          tables: r.tables.length,
          created: r.created ?? [],
          warnings: r.warnings ?? [],
        };
      } catch (err) {
        log.warn('snapshot copy failed', { replica, error: redactText(describeCause(err), secrets) });
        return translate(err);
      }
    },

    ...createApplyActivities(deps, translate, secrets),
  };
};
