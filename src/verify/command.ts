import type { Config } from '../config';
import { replicaShare, replicaUrl, requireSourceUrl } from '../config';
import { SourceError } from '../errors';
import { publicationName } from '../names';
import { publishedTables, resolveTables, TableRef } from '../capture/source';
import { withClient } from '../pg';
import { relLabel } from '../change';
import { verify, TableVerdict } from './verify';

/** Read-only: what `pgferry verify` compares — the published tables, or the given subset of them. */
export async function verifyReplica(config: Config, name: string, only: string[] | undefined): Promise<TableVerdict[]> {
  const sourceUrl = requireSourceUrl(config);
  const url = replicaUrl(config, name);
  const source = config.source.name;
  return withClient(`source '${source}'`, sourceUrl, async (src) => {
    const pub = publicationName(source);
    if (!(await src.query('SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1', [pub])).rows.length) {
      throw new SourceError(`source '${source}': not set up for pgferry (no publication ${pub}); run pgferry init first`);
    }
    let tables: TableRef[] = replicaShare(config, name, await publishedTables(src, source, pub));
    if (only?.length) {
      const wanted = await resolveTables(src, source, only);
      const byName = new Map(tables.map((t) => [relLabel(t), t]));
      const unpublished = wanted.filter((t) => !byName.has(relLabel(t))).map(relLabel);
      if (unpublished.length) throw new SourceError(`source '${source}': ${unpublished.join(', ')} is not replicated (not in publication ${pub}); fix --tables`);
      tables = wanted.map((t) => byName.get(relLabel(t))!);
    }
    return withClient(`replica '${name}'`, url, (dst) => verify({ source: src, replica: dst, replicaName: name, tables }));
  });
}
