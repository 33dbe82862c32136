/**
 * `pgferry init` (and the first steps of `pgferry up`): declare the change
 * stream, prepare the source (publication, then slot), check each replica.
 * Idempotent. What a user must fix is printed now, with the fix: tables the
 * source will refuse UPDATE/DELETE on, columns that cannot be carried,
 * replica tables or columns that do not match.
 */
import { capturesSchemaChanges } from '../capture/schema-capture';
import type { Config } from '../config';
import { replicaShare, requireSourceUrl } from '../config';
import { describeCause, PgferryError } from '../errors';
import { logger } from '../logger';
import { connectRabbit } from '../changelog/rabbit';
import type { TableRef } from '../tables';
import { checkNoUnfinishedCopy, prepareTarget } from '../apply/target';
import { captureMode } from '../capture/mode';
import { withClient } from '../pg';
import { prepareCapture, sourceHistory } from '../capture/prepare';
import { withRetry } from '../retry';
import { ProgressStore } from '../apply/progress-store';
import { firstTime } from '../warnings';

export interface InitResult {
  tables: TableRef[];
  /** Replicas that are not ready, with the reason. */
  replicaErrors: Map<string, string>;
}

export async function initialize(config: Config, say: (line: string) => void): Promise<InitResult> {
  requireSourceUrl(config);
  const source = config.source.name;
  const wait = config.connectWaitMs;

  const rabbit = await withRetry(() => connectRabbit(config.rabbitmqUrl), wait, logger);
  let prepared;
  try {
    prepared = await prepareCapture(config, rabbit);
  } finally {
    await rabbit.close().catch(() => undefined);
  }
  say(captureMode(config).describePrepared(source, prepared));
  // Warnings are the command's output (say): printed once, not also as a log line.
  for (const warning of prepared.warnings) if (firstTime(warning)) say(`WARNING ${warning}`);

  const history = await sourceHistory(config, requireSourceUrl(config));
  const schemaChangesCaptured = await withClient(`source '${source}'`, requireSourceUrl(config), capturesSchemaChanges).catch(() => false);
  // Each replica's workflow checks again when it starts, and reports problems in its status.
  const replicaErrors = new Map<string, string>();
  for (const r of config.replicas) {
    try {
      const warnings = await withRetry(
        () =>
          withClient(`replica '${r.name}'`, r.url, async (c) => {
            const w = await prepareTarget(c, r.name, replicaShare(config, r.name, prepared.tables), { schemaChangesCaptured });
            await checkNoUnfinishedCopy(c, r.name);
            await ProgressStore.create(c, r.name, source, history, prepared.stream.id);
            return w;
          }),
        wait,
        logger,
      );
      for (const warning of warnings) if (firstTime(warning)) say(`WARNING ${warning}`);
      say(`replica '${r.name}': ready`);
    } catch (err) {
      const message = err instanceof PgferryError ? err.message : describeCause(err);
      logger.error({ replica: r.name }, message);
      say(`replica '${r.name}': ERROR ${message}`);
      replicaErrors.set(r.name, message);
    }
  }
  return { tables: prepared.tables, replicaErrors };
}
