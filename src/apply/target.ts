/**
 * A replica database: pgferry's bookkeeping schema, and the check that it
 * has every table the source publishes.
 */
import { ProgressStore } from './progress-store';
import type pg from 'pg';
import { SchemaMismatchError } from '../errors';
import { nameLabel, relLabel } from '../change';
import { migrate } from '../migrations';
import type { TableRef } from '../tables';
import { tableKey, TableRegistry } from './table-registry';

/** Which of the given (schema, table) pairs do not exist as tables on this database? */
const MISSING_TABLES = `
SELECT w.schema_name, w.table_name
FROM unnest($1::text[], $2::text[]) AS w(schema_name, table_name)
WHERE NOT EXISTS (
  SELECT 1 FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = w.schema_name AND c.relname = w.table_name
    AND c.relkind IN ('r', 'p')
)`;

/**
 * Columns of the given (schema, table) pairs on this database, with the type
 * and whether an INSERT that leaves the column out must fail (NOT NULL, and
 * no default, identity or generation expression to fill it).
 */
const COLUMNS = `
SELECT n.nspname AS schema_name, c.relname AS table_name, a.attname AS column_name,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type_name,
       (a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '') AS required,
       a.attgenerated <> '' AS generated
FROM unnest($1::text[], $2::text[]) AS w(schema_name, table_name)
JOIN pg_catalog.pg_namespace n ON n.nspname = w.schema_name
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.table_name AND c.relkind IN ('r', 'p')
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
WHERE a.attnum > 0 AND NOT a.attisdropped
ORDER BY 1, 2, a.attnum`;

export interface ColumnRow {
  schema_name: string;
  table_name: string;
  column_name: string;
  type_name: string;
  /** Catalog booleans arrive as text ('t'/'f') on pgferry's connections. */
  required: boolean | string;
  generated: boolean | string;
}

/** The given tables that this database lacks (as a plain or partitioned table), in the order given. */
export async function missingTables(c: Pick<pg.ClientBase, 'query'>, tables: { schema: string; table: string }[]): Promise<{ schema: string; table: string }[]> {
  const { rows } = await c.query<{ schema_name: string; table_name: string }>(MISSING_TABLES, [tables.map((t) => t.schema), tables.map((t) => t.table)]);
  return rows.map((r) => ({ schema: r.schema_name, table: r.table_name }));
}

/** The columns of the given tables on this database (tables it lacks have none), in column order. */
export async function replicaColumns(c: Pick<pg.ClientBase, 'query'>, tables: { schema: string; table: string }[]): Promise<ColumnRow[]> {
  if (!tables.length) return [];
  return (await c.query<ColumnRow>(COLUMNS, [tables.map((t) => t.schema), tables.map((t) => t.table)])).rows;
}

/** pgferry's schema on the replica, migrated to this version (src/migrations.ts). */
export async function ensureTargetSchema(c: pg.ClientBase): Promise<void> {
  await migrate(c, 'target');
}

/**
 * Everything a replica needs before the first batch: the pgferry schema, and
 * every published table with every column the source sends. Returns warnings
 * (a column whose type differs, which the replica converts on input).
 */
export async function prepareTarget(
  c: pg.ClientBase,
  replica: string,
  share: TableRef[],
  o: { schemaChangesCaptured?: boolean; joining?: TableRef[] } = {},
): Promise<string[]> {
  await ensureTargetSchema(c);
  const { tables, warnings } = await takenTables(c, replica, share, o.joining ?? []);
  return [...warnings, ...(await checkTaken(c, replica, tables, o))];
}

/**
 * Of the tables the source captures for a replica, those it takes (its
 * registry, table-registry.ts, registered now if it has none), and a warning
 * for each captured table that has not joined it, or was removed from it.
 * `joining`: tables `pgferry table add` is bringing in (checked, not registered here).
 */
async function takenTables(c: pg.ClientBase, replica: string, share: TableRef[], joining: TableRef[]): Promise<{ tables: TableRef[]; warnings: string[] }> {
  const isJoining = new Set(joining.map((t) => tableKey(t.schema, t.table)));
  const registry = await TableRegistry.ensure(c, replica, share.filter((t) => !isJoining.has(tableKey(t.schema, t.table))));
  if (!registry.length) return { tables: share, warnings: [] };
  const state = new Map(registry.map((r) => [tableKey(r.schema, r.table), r.state]));
  const warnings: string[] = [];
  const tables = share.filter((t) => {
    const key = tableKey(t.schema, t.table);
    if (isJoining.has(key)) return true;
    const s = state.get(key);
    if (s === undefined) {
      warnings.push(
        `replica '${replica}': table ${relLabel(t)} is captured but has not joined this replica, so its changes are not applied here; ` +
          `run pgferry table add ${relLabel(t)} to copy it in while the other tables stream`,
      );
    } else if (s === 'copying' && !isJoining.has(key)) {
      warnings.push(
        `replica '${replica}': table ${relLabel(t)} is joining (pgferry table add), or its join was interrupted: its changes are kept on the replica, not applied, ` +
          `until the join finishes; if no pgferry table add ${relLabel(t)} is running, run it again`,
      );
    } else if (s === 'removed') {
      warnings.push(`replica '${replica}': table ${relLabel(t)} was removed from this replica (pgferry table remove); to take it again run pgferry table add ${relLabel(t)}`);
    }
    return s === 'ready' || s === 'copying';
  });
  const shared = new Set(share.map((t) => tableKey(t.schema, t.table)));
  for (const r of registry) {
    if (r.state !== 'removed' && !shared.has(tableKey(r.schema, r.table))) {
      warnings.push(
        `replica '${replica}': table ${relLabel(r)} is not among the tables the configuration gives it, but it has joined the replica: whatever the stream still carries of it is applied; ` +
          `to stop that, run pgferry table remove ${relLabel(r)} --only ${replica}`,
      );
    }
  }
  return { tables, warnings };
}

async function checkTaken(c: pg.ClientBase, replica: string, tables: TableRef[], o: { schemaChangesCaptured?: boolean }): Promise<string[]> {
  const at = o.schemaChangesCaptured ? await ProgressStore.get(c, replica) : null;
  if (at?.offset === null || at?.offset === undefined) {
    await checkTargetTables(c, replica, tables);
    return checkTargetColumns(c, replica, tables);
  }
  // With schema changes captured, a replica that has applied from the stream is as the stream left
  // it, which need not be the source's shape now: schema changes still in the stream bring it there
  // (schema-apply.ts). So here a difference is only said; applying stops at the first change the
  // replica cannot take, naming the row, and nothing is lost. (Without schema-change capture the
  // stream cannot reshape the replica, and a difference is refused here, before any change.)
  try {
    await checkTargetTables(c, replica, tables);
    return await checkTargetColumns(c, replica, tables);
  } catch (err) {
    if (!(err instanceof SchemaMismatchError)) throw err;
    const what = err.message.replace(/; (create|make) .*$/, '');
    return [`${what} — compared with the source as it is now; schema changes still in the stream may bring the replica there, and if not, applying stops at the first change it cannot take`];
  }
}

/**
 * A replica whose initial copy (`replica add --snapshot`) was interrupted holds
 * part of the data and a claim row: applying the stream onto it would double
 * some rows and miss others. Refuse to treat it as a replica until the copy
 * is finished (running add again re-attaches and restarts the copy) or it is
 * rebuilt by resync.
 */
export async function checkNoUnfinishedCopy(c: pg.ClientBase, replica: string): Promise<void> {
  const { rows } = await c.query('SELECT claimed_at::text AS at FROM pgferry.snapshot_claims WHERE replica = $1', [replica]).catch(() => ({ rows: [] as { at: string }[] }));
  if (rows.length) {
    throw new SchemaMismatchError(
      `replica '${replica}': its initial copy (replica add --snapshot, started ${rows[0].at}) did not finish, so its tables hold part of the data; ` +
        `run pgferry replica add ${replica} --snapshot again (it restarts the copy), or pgferry replica resync ${replica}, then pgferry replica resume ${replica}`,
    );
  }
}

export async function checkTargetTables(c: pg.ClientBase, replica: string, tables: TableRef[]): Promise<void> {
  if (!tables.length) return;
  const missing = await missingTables(c, tables);
  if (missing.length) {
    const names = missing.map((t) => relLabel(t));
    throw new SchemaMismatchError(
      `replica '${replica}': table ${names.join(', ')} does not exist on the replica; create ${names.length > 1 ? 'them' : 'it'} there (e.g. pg_dump --schema-only -t … from the source), then run pgferry replica resume ${replica}`,
    );
  }
}

/**
 * Compare the replica's columns with the source's, before any change is
 * applied: a column the source sends but the replica lacks, or a NOT NULL
 * replica column nothing would fill, would reject every insert later.
 */
export async function checkTargetColumns(c: pg.ClientBase, replica: string, tables: TableRef[]): Promise<string[]> {
  const withColumns = tables.filter((t) => t.columns);
  if (!withColumns.length) return [];
  const rows = await replicaColumns(c, withColumns);
  const problems: string[] = [];
  const warnings: string[] = [];
  for (const t of withColumns) {
    const label = relLabel(t);
    const mine = rows.filter((r) => r.schema_name === t.schema && r.table_name === t.table);
    const byName = new Map(mine.map((r) => [r.column_name, r]));
    const sent = new Set(t.columns!.map((col) => col.name));
    for (const col of t.columns!) {
      const r = byName.get(col.name);
      if (!r) problems.push(`${label}.${nameLabel(col.name)} (${col.type}) is missing`);
      else if (r.generated === true || r.generated === 't') problems.push(`${label}.${nameLabel(col.name)} is generated on the replica but sent by the source`);
      else if (r.type_name !== col.type) {
        warnings.push(`replica '${replica}': column ${label}.${nameLabel(col.name)} is ${r.type_name} on the replica but ${col.type} on the source; values are converted by the replica's input function, which may round or refuse them`);
      }
    }
    for (const r of mine) {
      if (!sent.has(r.column_name) && (r.required === true || r.required === 't')) {
        problems.push(`${label}.${nameLabel(r.column_name)} is NOT NULL without a default on the replica, and the source does not send it`);
      }
    }
  }
  if (problems.length) {
    throw new SchemaMismatchError(
      `replica '${replica}': column ${problems.join('; ')}; make the replica's table match the source's (e.g. pg_dump --schema-only -t … from the source), then run pgferry replica resume ${replica}`,
    );
  }
  return warnings;
}
