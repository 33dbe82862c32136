/**
 * Bulk updates and deletes by key through a staging table (issue 27, item 2).
 *
 * A set of rows updated (or deleted) by key — a run of one source
 * transaction's updates (runs.ts), or a window's net change per table
 * (net-apply.ts) — reaches the replica as:
 *   1. `CREATE TEMP TABLE IF NOT EXISTS` a staging table with the replica's
 *      own column types (one per shape of columns, dropped at commit: a
 *      staging table kept by the session would hold a dependency on the
 *      replica's types, and a DBA's DROP TYPE or DROP DOMAIN would fail until
 *      pgferry's connections close);
 *   2. `COPY` of the keys and new values into it, in text format, so every
 *      value is read by its column type's input function exactly as the
 *      source printed it;
 *   3. one `UPDATE … FROM` (or `DELETE … USING`) joined on the key, then
 *      `TRUNCATE` of the staging table, in one round trip.
 * instead of `UPDATE … FROM (VALUES …)` with a bound parameter per value,
 * 500 rows at a time. Measured on 1,000,000 rows of the bench's W2 table
 * (PostgreSQL 15, this machine): 5.2 CPU-seconds in the replica backend
 * against 11.5 for the VALUES form.
 *
 * The join's plan: for a staging table of a few thousand rows against a
 * table of a few hundred thousand, PostgreSQL's default random_page_cost (4)
 * makes a hash join over a scan of the whole target look cheaper than one
 * index probe per row — 3× slower in fact, on a replica whose pages are in
 * memory. The set statement runs with random_page_cost at most 1.1 (the usual
 * value for SSDs), restored right after it; a target without an index on the
 * key still gets its hash join.
 *
 * A replica role without the TEMP privilege on its database gets the VALUES
 * form, as before. Everything here runs inside the caller's savepoint: a
 * refused set statement undoes it, and the caller applies the rows one by
 * one, which names the row.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import type { RelationInfo, Row } from '../change';
import { isRefusal } from '../errors';
import type { Logger } from '../logger';
import { ident, qualified } from '../pg';
import { copyField } from './sql-builder';

/** Rows updated or deleted by key, each at most once, all of one table and (updates) writing the same columns. */
export interface KeyedRows {
  op: 'update' | 'delete';
  rel: RelationInfo;
  keys: readonly string[];
  /** The columns an update writes (none for a delete). */
  cols: string[];
  /** Each row's key (from `old`) and, for an update, the values it writes (from `new`). */
  rows: { old: Row; new: Row }[];
}

/** The statements of one staged set (pure). */
export interface StagedSql {
  create: string;
  copy: string;
  /** The set statement and the TRUNCATE, with random_page_cost lowered around the first: one simple-query round trip. */
  apply: string;
}

/** The staging SQL of a set, or null when a column's replica type is unknown (the caller's VALUES form then names the problem). */
export function stagedSql(set: KeyedRows, types: Map<string, string>): StagedSql | null {
  const all = [...set.keys, ...set.cols];
  if (!all.every((c) => types.has(c))) return null;
  const names = [...set.keys.map((_, i) => `k${i}`), ...set.cols.map((_, i) => `c${i}`)];
  const colTypes = all.map((c) => types.get(c) as string);
  // One staging table per shape (its columns' names and types): tables alike share it (it is emptied after every use).
  const shape = names.map((n, i) => `${n} ${colTypes[i]}`).join(', ');
  const stage = `pg_temp.${ident(`pgferry_stage_${createHash('sha1').update(shape).digest('hex').slice(0, 20)}`)}`;
  const target = qualified(set.rel.schema, set.rel.table);
  const on = set.keys.map((k, i) => `t.${ident(k)} = s.k${i}`).join(' AND ');
  const statement =
    set.op === 'update'
      ? `UPDATE ${target} AS t SET ${set.cols.map((c, i) => `${ident(c)} = s.c${i}`).join(', ')} FROM ${stage} AS s WHERE ${on}`
      : `DELETE FROM ${target} AS t USING ${stage} AS s WHERE ${on}`;
  return {
    create: `CREATE TEMP TABLE IF NOT EXISTS ${stage.slice('pg_temp.'.length)} (${shape}) ON COMMIT DROP`,
    copy: `COPY ${stage} FROM STDIN`,
    apply:
      `SELECT pg_catalog.set_config('pgferry.random_page_cost', pg_catalog.current_setting('random_page_cost'), true); ` +
      `SELECT pg_catalog.set_config('random_page_cost', LEAST(pg_catalog.current_setting('random_page_cost')::float8, 1.1)::text, true); ` +
      `${statement}; TRUNCATE ${stage}; ` +
      `SELECT pg_catalog.set_config('random_page_cost', pg_catalog.current_setting('pgferry.random_page_cost'), true)`,
  };
}

/** The COPY input of a set: each row's key, then (updates) the values it writes. */
export function stagedRows(set: KeyedRows): string {
  let out = '';
  for (const r of set.rows) {
    for (let i = 0; i < set.keys.length; i++) out += (i ? '\t' : '') + copyField(r.old[set.keys[i]]);
    for (const c of set.cols) out += '\t' + copyField(r.new[c]);
    out += '\n';
  }
  return out;
}

/** Whether each connection may create temporary tables: its role's TEMP privilege, asked once; false after a refused CREATE. */
const mayStage = new WeakMap<pg.ClientBase, boolean>();

/**
 * Apply a set through a staging table on the caller's connection, inside its
 * transaction. False, having changed nothing: this connection cannot stage
 * (no TEMP privilege, or its CREATE was refused: a temp_tablespaces it may
 * not use, TEMP revoked since), a column's type is unknown, or the replica
 * refused a value on COPY — use the VALUES form, which applies the rows or
 * names the refusal as before. The CREATE and COPY run under a savepoint of
 * their own for that; a refusal of the set statement reaches the caller.
 */
export async function applyStaged(c: pg.ClientBase, set: KeyedRows, types: Map<string, string>, log: Logger): Promise<boolean> {
  let may = mayStage.get(c);
  if (may === undefined) {
    const { rows } = await c.query(`SELECT pg_catalog.has_database_privilege(pg_catalog.current_database(), 'TEMP') AS ok`);
    may = rows[0].ok === true || rows[0].ok === 't';
    mayStage.set(c, may);
  }
  const sql = may ? stagedSql(set, types) : null;
  if (!sql) return false;
  try {
    await c.query(`SAVEPOINT pgferry_stage; ${sql.create}`);
  } catch (err) {
    if (!isRefusal(err)) throw err;
    await c.query('ROLLBACK TO SAVEPOINT pgferry_stage; RELEASE SAVEPOINT pgferry_stage');
    mayStage.set(c, false);
    log.warn(
      { error: (err as Error).message },
      `the replica refused a temporary staging table (${(err as Error).message}); this connection applies bulk updates and deletes with bound parameters instead (slower, same result). ` +
        `For the faster path, let the replica role create temporary tables in its database (GRANT TEMP ON DATABASE <database> TO <role>, and a temp_tablespaces it may use)`,
    );
    return false;
  }
  try {
    const stream = c.query(copyFrom(sql.copy));
    await new Promise<void>((resolve, reject) => {
      stream.on('error', reject);
      stream.on('finish', resolve);
      stream.end(stagedRows(set));
    });
  } catch (err) {
    if (!isRefusal(err)) throw err;
    await c.query('ROLLBACK TO SAVEPOINT pgferry_stage; RELEASE SAVEPOINT pgferry_stage');
    return false;
  }
  await c.query(`RELEASE SAVEPOINT pgferry_stage; ${sql.apply}`);
  staged.set(c, (staged.get(c) ?? 0) + 1);
  return true;
}

const staged = new WeakMap<pg.ClientBase, number>();

/** How many sets a connection has applied through a staging table (its tables are dropped at each commit: this is what shows they were used). */
export function stagedSets(c: pg.ClientBase): number {
  return staged.get(c) ?? 0;
}
