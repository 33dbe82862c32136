/**
 * Reading the source's catalog for tables, in either capture mode: resolve
 * the names a user gave, pick the tables a selection means, and describe
 * them with their columns (refusing columns pgferry cannot carry).
 */
import type pg from 'pg';
import { SourceError } from '../errors';
import { nameLabel, relLabel } from '../change';
import type { TableRef } from '../tables';

/**
 * Resolve user-given table names (schema may be empty: then the search_path
 * decides, as psql would) to (schema, table, oid). Missing ones come back with NULL oid.
 */
const RESOLVE_TABLES = `
SELECT w.ord, w.spec, n.nspname AS schema_name, c.relname AS table_name, c.oid::int AS oid, c.relkind::text AS relkind
FROM unnest($1::text[]) WITH ORDINALITY AS w(spec, ord)
LEFT JOIN pg_catalog.pg_class c ON c.oid = to_regclass(w.spec)
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
ORDER BY w.ord`;

interface ResolvedRow {
  ord: string;
  spec: string;
  /** Null (with oid and relkind) when the name resolves to nothing. */
  schema_name: string | null;
  table_name: string | null;
  oid: string | null;
  relkind: string | null;
}

/**
 * Every user table (plain, or a partition root): what trigger mode captures
 * without --tables. Partitions are captured through their root.
 */
const CANDIDATE_TABLES = `
SELECT n.nspname AS schema_name, c.relname AS table_name
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgferry', 'pgferry_shadow') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY 1, 2`;

/**
 * Columns of the given (published) tables, in table and column order, with their
 * type and whether pgferry can carry their values. Values travel as text, so
 * a type is carried when PostgreSQL can read back what it prints: not so for
 * pseudo-types and the internal types whose input function refuses every
 * value (pg_node_tree and the statistics types), nor for domains and arrays
 * over them. Stored generated columns are left out: the source does not send
 * them and the replica computes its own.
 */
const PUBLISHED_COLUMNS = `
WITH RECURSIVE cols AS (
  SELECT pt.schemaname, pt.tablename, a.attrelid, a.attnum, a.attname, a.atttypid,
         pg_catalog.format_type(a.atttypid, a.atttypmod) AS type_name
  FROM unnest($1::text[], $2::text[]) AS pt(schemaname, tablename)
  JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
  JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
  WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
),
-- each column's type, the type under each domain, the element of each array
under(attrelid, attnum, typid) AS (
  SELECT attrelid, attnum, atttypid FROM cols
  UNION
  SELECT u.attrelid, u.attnum, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END
  FROM under u JOIN pg_catalog.pg_type t ON t.oid = u.typid
  WHERE t.typtype = 'd' OR (t.typelem <> 0 AND t.typsubscript = 'pg_catalog.array_subscript_handler'::regproc)
)
SELECT cols.schemaname, cols.tablename, cols.attname AS column_name, cols.type_name,
       NOT EXISTS (
         SELECT 1 FROM under u JOIN pg_catalog.pg_type t ON t.oid = u.typid
         WHERE u.attrelid = cols.attrelid AND u.attnum = cols.attnum
           AND (t.typtype = 'p' OR t.typinput::text IN ('pg_node_tree_in', 'pg_ndistinct_in', 'pg_dependencies_in',
                'pg_mcv_list_in', 'brin_bloom_summary_in', 'brin_minmax_multi_summary_in'))
       ) AS carriable
FROM cols
ORDER BY cols.schemaname, cols.tablename, cols.attnum`;

interface PublishedColumnRow {
  schemaname: string;
  tablename: string;
  column_name: string;
  type_name: string;
  /** Catalog booleans arrive as text ('t'/'f') on pgferry's connections. */
  carriable: boolean | string;
}

export async function resolveTables(c: pg.Client, source: string, specs: string[]): Promise<TableRef[]> {
  const { rows } = await c.query<ResolvedRow>(RESOLVE_TABLES, [specs]);
  const missing = rows.filter((r) => r.oid === null).map((r) => r.spec);
  if (missing.length) {
    throw new SourceError(
      `source '${source}': table ${missing.join(', ')} does not exist on the source; fix --tables (schema.table, as listed by \\dt)`,
    );
  }
  const notTables = rows.filter((r) => !['r', 'p'].includes(r.relkind!)).map((r) => r.spec);
  if (notTables.length) throw new SourceError(`source '${source}': ${notTables.join(', ')} is not a table; only tables replicate, fix --tables`);
  // Every name resolved (checked above): schema and table are set.
  return rows.map((r) => ({ schema: r.schema_name!, table: r.table_name! }));
}

/** Every user table (plain, or a partition root), in a stable order: what a selection without --tables starts from. */
export async function candidateTables(c: pg.ClientBase): Promise<{ schema: string; table: string }[]> {
  const { rows } = await c.query<{ schema_name: string; table_name: string }>(CANDIDATE_TABLES);
  return rows.map((r) => ({ schema: r.schema_name, table: r.table_name }));
}

/** Which tables a source captures: `tables` if given, else every user table but `exclude`, else undefined (all tables, now and later). */
export interface TableSelection {
  tables?: readonly string[];
  exclude?: readonly string[];
  /** WAL capture: column lists and row filters of pgferry's publication, by table of `tables` (config sources[].publish). */
  publish?: Readonly<Record<string, { readonly columns?: readonly string[]; readonly rows?: string }>>;
}

export async function selectTables(c: pg.Client, source: string, sel: TableSelection): Promise<TableRef[] | undefined> {
  if (sel.tables?.length) return resolveTables(c, source, [...sel.tables]);
  if (!sel.exclude?.length) return undefined;
  const excluded = new Set((await resolveTables(c, source, [...sel.exclude])).map((t) => JSON.stringify([t.schema, t.table])));
  const all = await candidateTables(c);
  return all.filter((t) => !excluded.has(JSON.stringify([t.schema, t.table])));
}

/**
 * The tables with their columns. A column whose type cannot be carried stops
 * start-up with its name: replicating it would fail or mangle every row of
 * its table.
 */
export async function describeTables(c: pg.ClientBase, source: string, list: { schema: string; table: string }[]): Promise<TableRef[]> {
  const tables = new Map<string, TableRef>();
  for (const t of list) tables.set(JSON.stringify([t.schema, t.table]), { schema: t.schema, table: t.table, columns: [] });
  const refused: string[] = [];
  const { rows } = await c.query<PublishedColumnRow>(PUBLISHED_COLUMNS, [list.map((t) => t.schema), list.map((t) => t.table)]);
  for (const r of rows) {
    tables.get(JSON.stringify([r.schemaname, r.tablename]))?.columns!.push({ name: r.column_name, type: r.type_name });
    if (r.carriable === false || r.carriable === 'f') {
      refused.push(`${relLabel({ schema: r.schemaname, table: r.tablename })}.${nameLabel(r.column_name)} (type ${r.type_name})`);
    }
  }
  if (refused.length) {
    throw new SourceError(
      `source '${source}': column ${refused.join(', ')} cannot be replicated: pgferry carries values as text and PostgreSQL cannot read ` +
        `${refused.length > 1 ? 'these types' : 'this type'} back from text; leave the table out with --tables, or change the column's type`,
    );
  }
  return [...tables.values()];
}
