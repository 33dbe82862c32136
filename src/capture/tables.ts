/**
 * Reading the source's catalog for tables, in either capture mode: resolve
 * the names a user gave, pick the tables a selection means, and describe
 * them with their columns (refusing columns pgferry cannot carry).
 */
import type pg from 'pg';
import { SourceError } from '../errors';
import { loadSql } from '../sql';
import { nameLabel, relLabel } from '../change';
import type { TableRef } from '../tables';

export async function resolveTables(c: pg.Client, source: string, specs: string[]): Promise<TableRef[]> {
  const { rows } = await c.query(loadSql('source/resolve-tables.sql'), [specs]);
  const missing = rows.filter((r) => r.oid === null).map((r) => r.spec);
  if (missing.length) {
    throw new SourceError(
      `source '${source}': table ${missing.join(', ')} does not exist on the source; fix --tables (schema.table, as listed by \\dt)`,
    );
  }
  const notTables = rows.filter((r) => !['r', 'p'].includes(r.relkind)).map((r) => r.spec);
  if (notTables.length) throw new SourceError(`source '${source}': ${notTables.join(', ')} is not a table; only tables replicate, fix --tables`);
  return rows.map((r) => ({ schema: r.schema_name, table: r.table_name }));
}

/** Which tables a source captures: `tables` if given, else every user table but `exclude`, else undefined (all tables, now and later). */
export interface TableSelection {
  tables?: readonly string[];
  exclude?: readonly string[];
}

export async function selectTables(c: pg.Client, source: string, sel: TableSelection): Promise<TableRef[] | undefined> {
  if (sel.tables?.length) return resolveTables(c, source, [...sel.tables]);
  if (!sel.exclude?.length) return undefined;
  const excluded = new Set((await resolveTables(c, source, [...sel.exclude])).map((t) => JSON.stringify([t.schema, t.table])));
  const all = (await c.query(loadSql('source/trigger/candidate-tables.sql'))).rows.map((r) => ({ schema: r.schema_name as string, table: r.table_name as string }));
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
  const { rows } = await c.query(loadSql('source/published-columns.sql'), [list.map((t) => t.schema), list.map((t) => t.table)]);
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
