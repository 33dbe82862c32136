/**
 * Copying tables from an exported snapshot into a replica, several tables at
 * a time: COPY … TO STDOUT inside the snapshot on the source, piped into
 * COPY … FROM STDIN on the replica, in PostgreSQL's text format (both
 * sessions pin the same text settings). Each table is one replica
 * transaction: a copy that fails leaves that table as it was.
 */
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { relLabel } from '../change';
import type { TableRef } from '../tables';
import { connectPg, ident, qualified } from '../pg';
import { SchemaMismatchError, SourceError, SQLSTATE } from '../errors';

export interface TableProgress {
  table: string;
  rows: number;
  bytes: number;
  /** The source's estimate (pg_class.reltuples, table size), for rates and ETA. */
  estimatedRows: number;
  estimatedBytes: number;
  done: boolean;
}

export interface CopyOptions {
  sourceUrl: string;
  replicaUrl: string;
  source: string;
  replica: string;
  snapshot: string;
  tables: TableRef[];
  /** Where each table's rows go on the replica (default: the same name). */
  target?: (t: TableRef) => TableRef;
  parallel: number;
  onProgress?: (tables: TableProgress[]) => void;
}

export async function copyTables(o: CopyOptions): Promise<TableProgress[]> {
  const estimates = await estimate(o);
  const progress: TableProgress[] = o.tables.map((t, i) => ({ table: relLabel(t), rows: 0, bytes: 0, ...estimates[i], done: false }));
  let next = 0;
  const worker = async () => {
    while (next < o.tables.length) {
      const i = next++;
      await copyTable(o, o.tables[i], progress[i], () => o.onProgress?.(progress));
      progress[i].done = true;
      o.onProgress?.(progress);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(o.parallel, o.tables.length)) }, worker));
  return progress;
}

/**
 * Estimated rows and bytes of the given tables (a partitioned table: the sum
 * of its partitions), from the planner's statistics: for progress and ETA only.
 */
const TABLE_ESTIMATES = `
SELECT w.ord,
       coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint AS est_rows,
       coalesce(sum(pg_catalog.pg_table_size(c.oid)), 0)::bigint AS est_bytes
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(schema_name, table_name, ord)
JOIN pg_catalog.pg_namespace n ON n.nspname = w.schema_name
JOIN pg_catalog.pg_class r ON r.relnamespace = n.oid AND r.relname = w.table_name
CROSS JOIN LATERAL pg_catalog.pg_partition_tree(r.oid) pt
JOIN pg_catalog.pg_class c ON c.oid = pt.relid AND pt.isleaf
GROUP BY w.ord
ORDER BY w.ord`;

async function estimate(o: CopyOptions): Promise<{ estimatedRows: number; estimatedBytes: number }[]> {
  const c = await connectPg(`source '${o.source}'`, o.sourceUrl);
  try {
    const { rows } = await c.query<{ ord: string; est_rows: string; est_bytes: string }>(TABLE_ESTIMATES, [o.tables.map((t) => t.schema), o.tables.map((t) => t.table)]);
    return rows.map((r) => ({ estimatedRows: Math.max(0, Number(r.est_rows)), estimatedBytes: Number(r.est_bytes) }));
  } finally {
    await c.end().catch(() => undefined);
  }
}

async function copyTable(o: CopyOptions, t: TableRef, p: TableProgress, report: () => void): Promise<void> {
  if (!t.columns) throw new SchemaMismatchError(`source '${o.source}': table ${relLabel(t)} comes without its columns (a copy started by an older pgferry); start the copy again (replica add --snapshot, or replica resync)`);
  // A table with no columns copies its (empty) rows too: one empty line each, and no column list.
  const cols = t.columns.map((c) => ident(c.name)).join(', ');
  const src = await connectPg(`source '${o.source}'`, o.sourceUrl);
  const dst = await connectPg(`replica '${o.replica}'`, o.replicaUrl);
  try {
    await src.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await src.query(`SET TRANSACTION SNAPSHOT ${pg.escapeLiteral(o.snapshot)}`).catch((err) => {
      throw snapshotGone(o, t, err);
    });
    // A partitioned table is read through its root (as it is published); a plain table without its
    // inheritance children, which are published, and copied, on their own.
    const kind = (await src.query(`SELECT relkind::text AS k FROM pg_catalog.pg_class WHERE oid = $1::regclass`, [qualified(t.schema, t.table)])).rows[0].k;
    const from = `${kind === 'p' ? '' : 'ONLY '}${qualified(t.schema, t.table)}`;
    const into = o.target ? o.target(t) : t;
    await dst.query('BEGIN');
    // The publication's row filter (its own SQL, from the source's catalog) picks the rows the stream sends.
    const where = t.rowFilter ? ` WHERE ${t.rowFilter}` : '';
    const reading = src.query(copyTo(`COPY (SELECT ${cols} FROM ${from}${where}) TO STDOUT`));
    const writing = dst.query(copyFrom(`COPY ${qualified(into.schema, into.table)}${cols ? ` (${cols})` : ''} FROM STDIN`));
    let last = 0;
    const count = new Transform({
      transform(chunk: Buffer, _enc, done) {
        p.bytes += chunk.length;
        // In COPY's text format every row ends with a newline (newlines inside values are escaped).
        for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) p.rows += 1;
        if (Date.now() - last > 200) {
          last = Date.now();
          report();
        }
        done(null, chunk);
      },
    });
    await pipeline(reading, count, writing);
    await dst.query('COMMIT');
    await src.query('COMMIT');
  } catch (err) {
    await dst.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    await src.end().catch(() => undefined);
    await dst.end().catch(() => undefined);
  }
}

/**
 * The exported snapshot lives as long as the session that exported it: if
 * that session ended (the source restarted, its connection dropped or was
 * terminated) before every table's copy began, the rest cannot be read as
 * of the same moment. Nothing was swapped in or recorded; the command, run
 * again, takes a new snapshot.
 */
function snapshotGone(o: CopyOptions, t: TableRef, err: unknown): Error {
  const e = err as { code?: string; message?: string };
  if (e.code !== SQLSTATE.invalidParameterValue || !/snapshot/i.test(e.message ?? '')) return err as Error;
  return new SourceError(
    `source '${o.source}': the snapshot the copy reads from (${o.snapshot}) is gone before ${relLabel(t)} was copied: the session that exported it ended ` +
      `(the source restarted, or its connection dropped or was terminated) (${e.message}); the replica's position was not recorded and nothing was swapped in: run the command again, which starts the copy over`,
    { cause: err },
  );
}
