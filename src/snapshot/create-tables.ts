/**
 * `--create-tables`: create on the replica the published tables it lacks,
 * from the source's definitions — columns, types, defaults (and the
 * sequences they use), NOT NULL, identity and generated columns, primary
 * key (DEFERRABLE as on the source). Not copied: other indexes, constraints, triggers, grants (the
 * replica's own business). Types must already exist on the replica.
 */
import type pg from 'pg';
import { relLabel } from '../change';
import type { TableRef } from '../tables';
import { SchemaMismatchError } from '../errors';
import { ident, qualified } from '../pg';
import { missingTables } from '../apply/target';

/**
 * What CREATE TABLE needs to recreate the given tables elsewhere: each
 * column with its type, default, NOT NULL, identity and generation
 * expression, the primary key, and the sequences their defaults use
 * (lists as JSON text: pgferry reads every value as text).
 */
const TABLE_DEFINITIONS = `
SELECT w.schema_name, w.table_name,
       a.attname AS column_name,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type_name,
       a.attnotnull AS not_null,
       a.attidentity::text AS identity,
       a.attgenerated::text AS generated,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS default_expr,
       (SELECT pg_catalog.to_json(array_agg(s.oid::regclass::text))::text FROM pg_catalog.pg_depend dep
          JOIN pg_catalog.pg_class s ON s.oid = dep.refobjid AND s.relkind = 'S'
         WHERE dep.classid = 'pg_catalog.pg_attrdef'::regclass AND dep.objid = d.oid) AS sequences,
       (SELECT pg_catalog.to_json(array_agg(k.attname ORDER BY x.n))::text FROM pg_catalog.pg_index i
          CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS x(attnum, n)
          JOIN pg_catalog.pg_attribute k ON k.attrelid = i.indrelid AND k.attnum = x.attnum
         WHERE i.indrelid = c.oid AND i.indisprimary) AS primary_key,
       (SELECT CASE WHEN con.condeferred THEN 'DEFERRABLE INITIALLY DEFERRED' WHEN con.condeferrable THEN 'DEFERRABLE' ELSE '' END
          FROM pg_catalog.pg_constraint con WHERE con.conrelid = c.oid AND con.contype = 'p') AS key_timing
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(schema_name, table_name, ord)
JOIN pg_catalog.pg_namespace n ON n.nspname = w.schema_name
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.table_name
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
ORDER BY w.ord, a.attnum`;

interface TableDefinitionRow {
  schema_name: string;
  table_name: string;
  column_name: string;
  type_name: string;
  not_null: boolean | string;
  identity: string;
  generated: string;
  default_expr: string | null;
  /** JSON array of regclass names, or null. */
  sequences: string | null;
  /** JSON array of column names, or null (no primary key). */
  primary_key: string | null;
  /** 'DEFERRABLE' or 'DEFERRABLE INITIALLY DEFERRED' for a deferrable primary key, '' or null otherwise. */
  key_timing: string | null;
}

export async function createMissingTables(source: pg.ClientBase, replica: pg.ClientBase, replicaName: string, tables: TableRef[]): Promise<string[]> {
  const missing = await missingTables(replica, tables);
  if (!missing.length) return [];
  const defs = await tableDefinitions(source, tables.filter((t) => missing.some((m) => m.schema === t.schema && m.table === t.table)));
  await replica.query('BEGIN');
  try {
    const created = await createTables(replica, defs);
    await replica.query('COMMIT');
    return created;
  } catch (err) {
    await replica.query('ROLLBACK').catch(() => undefined);
    throw cannotCreate(replicaName, err, 'then run the command again');
  }
}

/** What the replica lacked to create a table, and the way out (`then`: what to run after). */
export function cannotCreate(replicaName: string, err: unknown, then: string): SchemaMismatchError {
  const e = err as { message?: string; code?: string };
  return new SchemaMismatchError(
    `replica '${replicaName}': cannot create the missing tables (${e.message}${e.code ? ` [${e.code}]` : ''}); ` +
      `create the types, schemas or tables it needs on the replica (pg_dump --schema-only from the source), ${then}`,
    { cause: err },
  );
}

/** A table as the source defines it: every column (generated ones and those a column list leaves out included). */
export interface TableDefinition {
  table: TableRef;
  columns: ColumnDef[];
}

/** The source's definitions of the given tables (a table it lacks has no columns here). */
export async function tableDefinitions(source: pg.ClientBase, tables: TableRef[]): Promise<TableDefinition[]> {
  if (!tables.length) return [];
  const { rows } = await source.query<TableDefinitionRow>(TABLE_DEFINITIONS, [tables.map((t) => t.schema), tables.map((t) => t.table)]);
  return tables.map((t) => ({
    table: t,
    columns: rows
      .filter((r) => r.schema_name === t.schema && r.table_name === t.table)
      .map((r) => ({
        ...r,
        not_null: r.not_null === 't' || r.not_null === true,
        sequences: r.sequences ? JSON.parse(r.sequences) : [],
        primary_key: r.primary_key ? JSON.parse(r.primary_key) : null,
      })),
  }));
}

/**
 * Create the tables from their definitions on the replica's connection, in
 * the caller's transaction. Returns their names.
 */
export async function createTables(replica: pg.ClientBase, defs: TableDefinition[]): Promise<string[]> {
  const created: string[] = [];
  for (const { table: t, columns } of defs) {
    // A publication's column list leaves columns out of the replica's copy entirely (generated ones are the replica's own).
    const published = t.columns ? new Set(t.columns.map((c) => c.name)) : null;
    const cols = columns.filter((r) => !published || published.has(r.column_name) || r.generated !== '');
    await replica.query(`CREATE SCHEMA IF NOT EXISTS ${ident(t.schema)}`);
    for (const seq of new Set(cols.flatMap((c) => (c.identity ? [] : c.sequences)))) {
      await replica.query(`CREATE SEQUENCE IF NOT EXISTS ${seq}`); // regclass text: already quoted and qualified as needed
    }
    await replica.query(tableDdl(t, cols));
    created.push(relLabel(t));
  }
  return created;
}

export interface ColumnDef {
  column_name: string;
  type_name: string;
  not_null: boolean;
  identity: string;
  generated: string;
  default_expr: string | null;
  sequences: string[];
  primary_key: string[] | null;
  /**
   * The primary key's DEFERRABLE clause, if any: a source transaction may shift or swap a deferrable
   * key through values other rows still hold, and applied row by row the replica's copy must allow it.
   */
  key_timing?: string | null;
}

export function tableDdl(t: TableRef, cols: ColumnDef[]): string {
  const defs = cols.map((c) => {
    let d = `${ident(c.column_name)} ${c.type_name}`;
    if (c.generated === 's') d += ` GENERATED ALWAYS AS (${c.default_expr}) STORED`;
    else if (c.identity === 'a') d += ' GENERATED ALWAYS AS IDENTITY';
    else if (c.identity === 'd') d += ' GENERATED BY DEFAULT AS IDENTITY';
    else if (c.default_expr !== null) d += ` DEFAULT ${c.default_expr}`;
    if (c.not_null && !c.identity) d += ' NOT NULL';
    return d;
  });
  const pk = cols[0]?.primary_key;
  const timing = cols[0]?.key_timing;
  if (pk?.length) defs.push(`PRIMARY KEY (${pk.map(ident).join(', ')})${timing === 'DEFERRABLE' || timing === 'DEFERRABLE INITIALLY DEFERRED' ? ` ${timing}` : ''}`);
  return `CREATE TABLE ${qualified(t.schema, t.table)} (${defs.join(', ')})`;
}
