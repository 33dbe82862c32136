/**
 * Thin adapters from Temporal to src/: inputs are names, never connection
 * strings; each activity resolves names through the worker's own config,
 * calls src/, and translates errors (permanent → non-retryable failure with
 * the error's class as type; anything else → retried with backoff).
 */
import { ApplicationFailure, Context, log } from '@temporalio/activity';
import { Config, replicaShare, replicaUrl, requireSourceUrl } from '../src/config';
import { ConfigError, PgferryError, classifyError, describeCause } from '../src/errors';
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
import { firstTime } from '../src/warnings';
import { addReplica } from '../src/snapshot/add';
import type { SnapshotResult } from '../workflows/messages';
import { replicaDescription, searchAttributesRegistered } from '../src/temporal/search-attributes';
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
          copyLinesAfter: config.batch.copyLinesAfter,
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

    /**
     * A replica workflow started by name alone (the Temporal UI, temporal workflow start, pgferry replica
     * start): its source and tables from this worker's configuration, and whether the namespace has
     * pgferry's search attributes (so the workflow may show them). An unknown name is permanent.
     */
    async resolveReplica({ replica }: { replica: string }): Promise<{ source: string; tables: TableRef[]; searchAttributes: boolean; description: string }> {
      try {
        const known = config.replicas.map((r) => r.name);
        if (!known.includes(replica)) {
          throw new ConfigError(
            `replica '${replica}' is not configured on this worker (source '${config.source.name}'); it knows ${known.length ? known.map((n) => `'${n}'`).join(', ') : 'no replicas'}. ` +
              `Start one of those, or add '${replica}' under replicas: in the worker's configuration and restart it`,
          );
        }
        const source = config.source.name;
        const tables = await withClient(`source '${source}'`, requireSourceUrl(config), (c) => captureMode(config).capturedTables(c, source));
        return {
          source,
          tables: replicaShare(config, replica, tables),
          searchAttributes: await searchAttributesRegistered(() => Context.current().client, config.temporal.namespace),
          description: replicaDescription(replica, source),
        };
      } catch (err) {
        return translate(err);
      }
    },

    async prepareReplica({ replica, source, tables }: ReplicaRef & { tables: TableRef[] }): Promise<void> {
      try {
        const url = replicaUrl(config, replica);
        const client = await poolConnect(`replica '${replica}'`, url, resources.pool(replica));
        try {
          const schemaChangesCaptured = await withClient(`source '${source}'`, requireSourceUrl(config), capturesSchemaChanges).catch(() => false);
          for (const warning of await prepareTarget(client, replica, tables, { schemaChangesCaptured })) if (firstTime(warning)) log.warn(warning, { replica });
          await checkNoUnfinishedCopy(client, replica);
          if (!(await useReplicaRole(client))) {
            const advice = await replicaRoleAdvice(client, replica);
            if (firstTime(advice)) log.warn(advice, { replica });
          }
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
