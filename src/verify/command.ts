/** `pgferry verify`: which tables to compare (the capture mode's, or a subset), on which connections. */
import type { Config } from '../config';
import { replicaShare, replicaUrl, requireSourceUrl } from '../config';
import { SourceError } from '../errors';
import { captureMode, refuseOtherMode } from '../capture/mode';
import { resolveTables } from '../capture/tables';
import type { TableRef } from '../tables';
import { REPLICA_SESSION_OPTIONS, withClient } from '../pg';
import { relLabel } from '../change';
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
    return withClient(`replica '${name}'`, url, (dst) => verify({ source: src, replica: dst, replicaName: name, tables, sourcePoint: mode.currentPoint, capturedThrough: (c, at) => mode.capturedThrough(c, source, at) }), pinned);
  });
}
