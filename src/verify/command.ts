import type { Config } from '../config';
import { replicaShare, replicaUrl, requireSourceUrl } from '../config';
import { SourceError } from '../errors';
import { publicationName } from '../names';
import { describeTables, publishedTables, resolveTables, TableRef } from '../capture/source';
import { loadSql } from '../sql';
import { REPLICA_SESSION_OPTIONS, withClient } from '../pg';
import { relLabel } from '../change';
import { verify, TableVerdict } from './verify';

/** Read-only: what `pgferry verify` compares — the published tables, or the given subset of them. */
export async function verifyReplica(config: Config, name: string, only: string[] | undefined): Promise<TableVerdict[]> {
  const sourceUrl = requireSourceUrl(config);
  const url = replicaUrl(config, name);
  const source = config.source.name;
  const trigger = config.source.mode === 'trigger';
  // The replica's session pins search_path (as apply's do); the source's resolves --tables as psql would.
  const pinned = { options: REPLICA_SESSION_OPTIONS };
  return withClient(`source '${source}'`, sourceUrl, async (src) => {
    const pub = publicationName(source);
    let tables: TableRef[];
    if (trigger) {
      // Trigger mode: the "publication" is the set of tables with pgferry's capture trigger.
      const installed = (await src.query(`SELECT to_regclass('pgferry.capture_state') IS NOT NULL AS yes`)).rows[0].yes;
      if (!(installed === true || installed === 't')) {
        throw new SourceError(`source '${source}': trigger capture is not installed (no schema pgferry); run pgferry init --mode trigger first`);
      }
      const captured = (await src.query(loadSql('source/trigger/captured-tables.sql'))).rows.map((r) => ({ schema: r.schemaname as string, table: r.tablename as string }));
      tables = replicaShare(config, name, await describeTables(src, source, captured));
    } else {
      if (!(await src.query('SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1', [pub])).rows.length) {
        throw new SourceError(`source '${source}': not set up for pgferry (no publication ${pub}); run pgferry init first`);
      }
      tables = replicaShare(config, name, await publishedTables(src, source, pub));
    }
    if (only?.length) {
      const wanted = await resolveTables(src, source, only);
      const byName = new Map(tables.map((t) => [relLabel(t), t]));
      const unpublished = wanted.filter((t) => !byName.has(relLabel(t))).map(relLabel);
      if (unpublished.length) {
        throw new SourceError(`source '${source}': ${unpublished.join(', ')} is not replicated (${trigger ? 'no capture trigger' : `not in publication ${pub}`}); fix --tables`);
      }
      tables = wanted.map((t) => byName.get(relLabel(t))!);
    }
    return withClient(`replica '${name}'`, url, (dst) => verify({ source: src, replica: dst, replicaName: name, tables, mode: config.source.mode }), pinned);
  });
}
