import type pg from 'pg';
import { SchemaMismatchError } from '../errors';
import { relLabel } from '../change';
import { loadSql } from '../sql';
import type { TableRef } from '../capture/source';

/**
 * A replica database: pgferry's bookkeeping schema, and the check that it
 * has every table the source publishes.
 */
export async function ensureTargetSchema(c: pg.ClientBase): Promise<void> {
  await c.query(loadSql('target/schema.sql'));
}

/** Everything a replica needs before the first batch: the pgferry schema, and every published table. */
export async function prepareTarget(c: pg.ClientBase, replica: string, tables: TableRef[]): Promise<void> {
  await ensureTargetSchema(c);
  await checkTargetTables(c, replica, tables);
}

export async function checkTargetTables(c: pg.ClientBase, replica: string, tables: TableRef[]): Promise<void> {
  if (!tables.length) return;
  const { rows } = await c.query(loadSql('target/missing-tables.sql'), [tables.map((t) => t.schema), tables.map((t) => t.table)]);
  if (rows.length) {
    const names = rows.map((r) => relLabel({ schema: r.schema_name, table: r.table_name }));
    throw new SchemaMismatchError(
      `replica '${replica}': table ${names.join(', ')} does not exist on the replica; create ${names.length > 1 ? 'them' : 'it'} there (e.g. pg_dump --schema-only -t … from the source), then run pgferry replica resume ${replica}`,
    );
  }
}
