/**
 * SQL for applying one change to a replica. Pure. Identifiers are always
 * escaped; values are always parameters in PostgreSQL text form, which the
 * server converts with each column's own input function (so every type,
 * arrays and json included, arrives exactly as the source printed it).
 */
import { createHash } from 'node:crypto';
import { perRelation, type RelationInfo, type Row, type Value } from '../change';
import { ident, qualified } from '../pg';

export interface Statement {
  /** Prepared-statement name: the same text is parsed once per connection. */
  name: string;
  text: string;
  values: Value[];
}

function stmt(text: string, values: Value[]): Statement {
  return { name: `pf_${createHash('sha1').update(text).digest('hex').slice(0, 20)}`, text, values };
}

/** The key columns' names, in column order (asked once per change on apply's hot path: kept per description). */
export const keyColumns: (rel: RelationInfo) => readonly string[] = perRelation((rel) => Object.freeze(rel.columns.filter((c) => c.key).map((c) => c.name)));

/** The identity of a row as shown in errors: {"id":"42"}. */
export function describeKey(rel: RelationInfo, row: Row): string {
  const cols = keyColumns(rel).filter((c) => c in row);
  const key: Row = {};
  for (const c of cols.length ? cols : Object.keys(row)) key[c] = row[c];
  return JSON.stringify(key);
}

/**
 * How a statement refers to its n-th value (1-based) for a column: `$n`
 * (a statement of its own), or `$1[n]::type` (one of many statements run by
 * pgferry.apply_statements, which binds each statement's values as one text
 * array; the cast to the replica's own column type makes the server read the
 * value with that type's input function, as it would read `$n`).
 */
export type ParamRef = (n: number, column: string) => string;

export const positional: ParamRef = (n) => `$${n}`;

/** `$1[n]::type` references, or null when a column's replica type is unknown (then the change goes on its own). */
export function arrayRefs(columns: string[], types: Map<string, string>): ParamRef | null {
  if (!columns.every((c) => types.has(c))) return null;
  return (n, column) => `$1[${n}]::${types.get(column)}`;
}

export function buildInsert(rel: RelationInfo, row: Row, ref: ParamRef = positional): Statement {
  return buildInsertRows(rel, [row], ref);
}

/** PostgreSQL's limit on bind parameters in one statement. */
const MAX_PARAMS = 65535;
/** Rows per multi-row INSERT: large enough to make round trips rare, small enough to parse fast. */
export const INSERT_ROWS = 500;

/** How many rows of this width one INSERT may carry. */
export function insertRowsLimit(columns: number): number {
  return Math.max(1, Math.min(INSERT_ROWS, Math.floor(MAX_PARAMS / Math.max(1, columns))));
}

/**
 * One INSERT for several rows with the same columns. Every value is still a
 * positional parameter typed by its target column, exactly as in a one-row
 * INSERT. Only statements of the usual sizes (one row, a full group) are
 * named, so a connection keeps a handful of prepared statements per table.
 */
export function buildInsertRows(rel: RelationInfo, rows: Row[], ref: ParamRef = positional): Statement {
  const cols = Object.keys(rows[0]);
  if (!cols.length) {
    // Rows without a value: a table with no columns (or only generated ones). `INSERT … ()` is not SQL.
    const target = qualified(rel.schema, rel.table);
    const st = stmt(rows.length === 1 ? `INSERT INTO ${target} DEFAULT VALUES` : `INSERT INTO ${target} SELECT FROM pg_catalog.generate_series(1, ${rows.length})`, []);
    return rows.length === 1 || rows.length === insertRowsLimit(0) ? st : { ...st, name: '' };
  }
  const tuples = rows.map((_, r) => `(${cols.map((c, i) => ref(r * cols.length + i + 1, c)).join(', ')})`);
  // OVERRIDING SYSTEM VALUE: GENERATED ALWAYS identity columns take the source's value.
  const text = `INSERT INTO ${qualified(rel.schema, rel.table)} (${cols.map(ident).join(', ')}) OVERRIDING SYSTEM VALUE VALUES ${tuples.join(', ')}`;
  const values = rows.flatMap((row) => cols.map((c) => row[c]));
  const st = stmt(text, values);
  return rows.length === 1 || rows.length === insertRowsLimit(cols.length) ? st : { ...st, name: '' };
}

/** Runs of at least this many inserts go by COPY (one more round trip than an INSERT, much less work per row). */
export const COPY_MIN_ROWS = 64;
/** Most rows in one COPY: bounded so a refused run is cheap to redo row by row. */
export const COPY_MAX_ROWS = 5000;

/** `COPY table (cols) FROM STDIN` for a run of inserts (COPY, like OVERRIDING SYSTEM VALUE, keeps identity values). */
export function buildCopyInsert(rel: RelationInfo, cols: readonly string[]): string {
  // No columns: no list (`()` is not SQL); each row is then an empty line.
  return `COPY ${qualified(rel.schema, rel.table)}${cols.length ? ` (${cols.map(ident).join(', ')})` : ''} FROM STDIN`;
}

/**
 * Rows in COPY's text format: tab between values, newline after each row,
 * \N for NULL, and backslash, tab, newline and carriage return escaped, so
 * each value reaches the column's input function exactly as the source printed it.
 */
export function copyText(cols: string[], rows: Row[]): string {
  let out = '';
  for (const row of rows) {
    for (let i = 0; i < cols.length; i++) {
      if (i > 0) out += '\t';
      out += copyField(row[cols[i]]);
    }
    out += '\n';
  }
  return out;
}

/** One value in COPY's text format (as copyText writes it). */
export function copyField(v: Value | undefined): string {
  return v === null || v === undefined ? '\\N' : COPY_SPECIAL.test(v) ? v.replace(COPY_ESCAPE, escapeCopyChar) : v;
}

const COPY_SPECIAL = /[\\\t\n\r]/;
const COPY_ESCAPE = /[\\\t\n\r]/g;
const escapeCopyChar = (ch: string) => (ch === '\\' ? '\\\\' : ch === '\t' ? '\\t' : ch === '\n' ? '\\n' : '\\r');

/**
 * Several rows updated by key in one statement, each to its own values:
 * UPDATE … FROM (VALUES …) matched on the key. `types` are the replica's own
 * column types (without typmod: the assignment still checks length and
 * precision, as a one-row UPDATE would); every value is a parameter.
 */
export function buildUpdateRows(rel: RelationInfo, keys: readonly string[], cols: string[], rows: { old: Row; new: Row }[], types: Map<string, string>): Statement {
  const all = [...keys, ...cols];
  const tuples = rows.map((_, r) => `(${all.map((c, i) => `$${r * all.length + i + 1}::${types.get(c)}`).join(', ')})`);
  const names = [...keys.map((_, i) => `k${i}`), ...cols.map((_, i) => `c${i}`)];
  const text =
    `UPDATE ${qualified(rel.schema, rel.table)} AS t SET ${cols.map((c, i) => `${ident(c)} = v.c${i}`).join(', ')} ` +
    `FROM (VALUES ${tuples.join(', ')}) AS v(${names.join(', ')}) WHERE ${keys.map((k, i) => `t.${ident(k)} = v.k${i}`).join(' AND ')}`;
  const values = rows.flatMap((r) => [...keys.map((k) => r.old[k]), ...cols.map((c) => r.new[c])]);
  return { ...stmt(text, values), name: '' };
}

/** Several rows deleted by key in one statement (DELETE … USING (VALUES …)). */
export function buildDeleteRows(rel: RelationInfo, keys: readonly string[], olds: Row[], types: Map<string, string>): Statement {
  const tuples = olds.map((_, r) => `(${keys.map((k, i) => `$${r * keys.length + i + 1}::${types.get(k)}`).join(', ')})`);
  const text =
    `DELETE FROM ${qualified(rel.schema, rel.table)} AS t USING (VALUES ${tuples.join(', ')}) AS v(${keys.map((_, i) => `k${i}`).join(', ')}) ` +
    `WHERE ${keys.map((k, i) => `t.${ident(k)} = v.k${i}`).join(' AND ')}`;
  return { ...stmt(text, olds.flatMap((o) => keys.map((k) => o[k]))), name: '' };
}

/** Columns an UPDATE writes: those sent, minus identity columns whose value did not change. */
export function changedColumns(old: Row, row: Row): string[] {
  return Object.keys(row).filter((c) => !(c in old && old[c] === row[c]));
}

/**
 * Types without a usable equality operator (json, xml, geometry — box's `=`
 * even compares areas): a whole-row match compares their text form, which is
 * exactly what the source sent.
 */
const NO_EQUALITY = /^(json|xml|point|line|lseg|box|path|polygon|circle)(\[\])*$/;

/**
 * WHERE clause matching the row identified by `old`. With a key (primary key
 * or identity index) it matches on the key. With REPLICA IDENTITY FULL it
 * matches the whole old row, NULLs included, and exactly one row even when
 * duplicates exist.
 */
function whereRow(rel: RelationInfo, old: Row, firstParam: number, ref: ParamRef): { with?: string; sql: string; values: Value[] } {
  const full = rel.identity === 'full';
  const cols = (full ? rel.columns.map((c) => c.name) : keyColumns(rel)).filter((c) => c in old);
  // A table with no columns has only whole, empty rows: any one of them is the row.
  if (!cols.length && !(full && !rel.columns.length)) throw new Error(`no replica identity columns for ${rel.schema}.${rel.table}`);
  const values = cols.map((c) => old[c]);
  if (!full) {
    return { sql: cols.map((c, i) => `${ident(c)} = ${ref(firstParam + i, c)}`).join(' AND '), values };
  }
  const types = new Map(rel.columns.map((c) => [c.name, c.type]));
  const cond = cols
    .map((c, i) =>
      NO_EQUALITY.test(types.get(c) ?? '')
        ? `${ident(c)}::text IS NOT DISTINCT FROM ${ref(firstParam + i, c)}::text`
        : `${ident(c)} IS NOT DISTINCT FROM ${ref(firstParam + i, c)}`,
    )
    .join(' AND ') || 'true';
  // The row by (tableoid, ctid), not ctid alone: on a partitioned or inherited replica table a ctid is
  // only unique within one partition, and the outer statement sees them all. Picked once (the CTE), then
  // matched with two scalar comparisons, so the outer statement is still a TID scan.
  return {
    with: `WITH pgferry_row AS (SELECT tableoid AS t, ctid AS c FROM ${qualified(rel.schema, rel.table)} WHERE ${cond} LIMIT 1) `,
    sql: `ctid = (SELECT c FROM pgferry_row) AND tableoid = (SELECT t FROM pgferry_row)`,
    values,
  };
}

export function buildUpdate(rel: RelationInfo, old: Row, row: Row, ref: ParamRef = positional): Statement | null {
  // Identity columns whose value did not change are not SET: a GENERATED ALWAYS identity
  // key may only be "updated" to DEFAULT, and with REPLICA IDENTITY FULL only changed columns are written.
  const cols = changedColumns(old, row);
  if (!cols.length) return null; // nothing changed that was sent (e.g. only unchanged TOAST)
  const set = cols.map((c, i) => `${ident(c)} = ${ref(i + 1, c)}`).join(', ');
  const where = whereRow(rel, old, cols.length + 1, ref);
  return stmt(`${where.with ?? ''}UPDATE ${qualified(rel.schema, rel.table)} SET ${set} WHERE ${where.sql}`, [...cols.map((c) => row[c]), ...where.values]);
}

export function buildDelete(rel: RelationInfo, old: Row, ref: ParamRef = positional): Statement {
  const where = whereRow(rel, old, 1, ref);
  return stmt(`${where.with ?? ''}DELETE FROM ${qualified(rel.schema, rel.table)} WHERE ${where.sql}`, where.values);
}

/**
 * A source TRUNCATE, never with CASCADE: like PostgreSQL's own apply worker,
 * pgferry empties exactly the relations it received (a source CASCADE sends
 * every table it emptied). A replica-only table referencing one of them then
 * makes the TRUNCATE fail loudly instead of being emptied too.
 */
export function buildTruncate(rels: RelationInfo[], restartIdentity: boolean): Statement {
  const list = rels.map((r) => qualified(r.schema, r.table)).join(', ');
  return stmt(`TRUNCATE ${list}${restartIdentity ? ' RESTART IDENTITY' : ''}`, []);
}
