/** `pgferry verify`: which tables to compare (the capture mode's, or a subset), on which connections. */
import type { Config } from '../config';
import { replicaShare, replicaUrl, requireSourceUrl } from '../config';
import { SourceError } from '../errors';
import { captureMode, refuseOtherMode } from '../capture/mode';
import { resolveTables } from '../capture/tables';
import type { TableRef } from '../tables';
import { REPLICA_SESSION_OPTIONS, withClient } from '../pg';
import { relLabel } from '../change';
import type pg from 'pg';
import { connectRabbit } from '../changelog/rabbit';
import { endOfLog } from '../changelog/cursor';
import type { SourcePoint } from '../capture/contract';
import { verify, TableVerdict } from './verify';

/** Read-only: what `pgferry verify` compares — the published tables, or the given subset of them. */
export async function verifyReplica(config: Config, name: string, only: string[] | undefined): Promise<TableVerdict[]> {
  const sourceUrl = requireSourceUrl(config);
  const url = replicaUrl(config, name);
  const source = config.source.name;
  const mode = captureMode(config);
  // The replica's session pins search_path (as apply's do); the source's resolves --tables as psql would.
  const pinned = { options: REPLICA_SESSION_OPTIONS };
  return withClient(`source '${source}'`, sourceUrl, async (src) => {
    await refuseOtherMode(src, source, mode);
    let tables: TableRef[] = replicaShare(config, name, await mode.capturedTables(src, source));
    if (only?.length) {
      const wanted = await resolveTables(src, source, only);
      const byName = new Map(tables.map((t) => [relLabel(t), t]));
      const unpublished = wanted.filter((t) => !byName.has(relLabel(t))).map(relLabel);
      if (unpublished.length) {
        throw new SourceError(`source '${source}': ${unpublished.join(', ')} is not replicated (${mode.notCaptured(source)}); fix --tables`);
      }
      tables = wanted.map((t) => byName.get(relLabel(t))!);
    }
    // The log tells an idle source from a lagging replica (verify.ts catchUp); without RabbitMQ, verify
    // still works, judging a replica caught up only after it has stood still longer.
    const rabbit = await connectRabbit(config.rabbitmqUrl).catch(() => null);
    try {
      const newestInLog = rabbit ? async () => (await endOfLog(rabbit, source)).lsn : undefined;
      const capturedThrough = (c: pg.ClientBase, at: SourcePoint) => mode.capturedThrough(c, source, at);
      return await withClient(`replica '${name}'`, url, (dst) => verify({ source: src, replica: dst, replicaName: name, tables, sourcePoint: mode.currentPoint, capturedThrough, newestInLog }), pinned);
    } finally {
      await rabbit?.close().catch(() => undefined);
    }
  });
}
