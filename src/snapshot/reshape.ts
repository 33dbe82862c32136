/**
 * Resync's reshaping: after a gap a replica's tables can lag the source's
 * shape by exactly the schema changes it lost, so `replica resync` brings
 * each table to the source's columns as part of the rebuild, keeping the
 * table itself (indexes, grants, views, foreign keys):
 * - a column the source no longer has is dropped (no CASCADE: a view of the
 *   replica's own on it fails the resync, named);
 * - a column the source sends and the replica lacks is added, nullable, with
 *   the source's type;
 * - a column whose type differs takes the source's type.
 * Columns are matched by name: a column renamed on the source is dropped and
 * added (every row is copied again anyway). Generated columns of the
 * replica's are its own and stay; so do columns the source has but does not
 * send (a publication's column list). The statements run in the swap
 * transaction after its TRUNCATE: no rows are left, so any type change works.
 */
import type pg from 'pg';
import { nameLabel, relLabel } from '../change';
import { describeCause, isTransient, SchemaMismatchError } from '../errors';
import { ident, qualified } from '../pg';
import { isTypeName } from '../schema-change';
import type { TableRef } from '../tables';
import { replicaColumns, type ColumnRow } from '../apply/target';

export type ReshapeStep =
  | { kind: 'drop-column'; name: string }
  | { kind: 'alter-type'; name: string; from: string; to: string }
  | { kind: 'add-column'; name: string; type: string };

export interface Reshape {
  table: TableRef;
  /** In the order they run: drops (freeing names), type changes, additions. */
  steps: ReshapeStep[];
  /** Why the table cannot be brought to the source's columns (empty: it can). */
  problems: string[];
}

const yes = (v: boolean | string) => v === true || v === 't';

/**
 * Pure. `sourceColumns`: every column the source's table has (generated and
 * unpublished ones too); `mine`: the replica's columns of the table.
 */
export function planReshape(t: TableRef, sourceColumns: ReadonlySet<string>, mine: ColumnRow[]): Reshape {
  const sent = t.columns ?? [];
  const byName = new Map(mine.map((r) => [r.column_name, r]));
  const isSent = new Set(sent.map((c) => c.name));
  const drops: ReshapeStep[] = [];
  const alters: ReshapeStep[] = [];
  const adds: ReshapeStep[] = [];
  const problems: string[] = [];
  for (const r of mine) {
    if (isSent.has(r.column_name) || yes(r.generated)) continue;
    if (!sourceColumns.has(r.column_name)) drops.push({ kind: 'drop-column', name: r.column_name });
    else if (yes(r.required)) problems.push(`column ${nameLabel(r.column_name)} is NOT NULL without a default on the replica, and the source does not send it`);
  }
  for (const col of sent) {
    const r = byName.get(col.name);
    if (!isTypeName(col.type)) problems.push(`column ${nameLabel(col.name)} has a type pgferry does not recognise as a type name (${JSON.stringify(col.type)})`);
    else if (!r) adds.push({ kind: 'add-column', name: col.name, type: col.type });
    else if (yes(r.generated)) problems.push(`column ${nameLabel(col.name)} is generated on the replica but sent by the source`);
    else if (r.type_name !== col.type) alters.push({ kind: 'alter-type', name: col.name, from: r.type_name, to: col.type });
  }
  return { table: t, steps: [...drops, ...alters, ...adds], problems };
}

/** The statement of one step. */
export function reshapeSql(t: TableRef, s: ReshapeStep): string {
  const q = qualified(t.schema, t.table);
  switch (s.kind) {
    case 'drop-column':
      return `ALTER TABLE ${q} DROP COLUMN ${ident(s.name)}`;
    case 'alter-type':
      // The table was emptied in this transaction: the USING expression never meets a row, and
      // NULL converts to every type (a cast between the two types need not exist).
      return `ALTER TABLE ${q} ALTER COLUMN ${ident(s.name)} TYPE ${s.to} USING NULL::${s.to}`;
    case 'add-column':
      return `ALTER TABLE ${q} ADD COLUMN ${ident(s.name)} ${s.type}`;
  }
}

/** One step for people: "column n type integer → bigint". */
export function describeReshapeStep(s: ReshapeStep): string {
  switch (s.kind) {
    case 'drop-column':
      return `column ${nameLabel(s.name)} dropped`;
    case 'alter-type':
      return `column ${nameLabel(s.name)} type ${s.from} → ${s.to}`;
    case 'add-column':
      return `column ${nameLabel(s.name)} added`;
  }
}

/**
 * What each of the given tables (present on the replica) needs to take the
 * source's columns; `sourceColumns` by table (relLabel). Throws, naming the
 * table, the cause and the fix, when one cannot be brought there.
 */
export async function planReshapes(c: Pick<pg.ClientBase, 'query'>, replica: string, tables: TableRef[], sourceColumns: ReadonlyMap<string, ReadonlySet<string>>): Promise<Reshape[]> {
  const rows = await replicaColumns(c, tables);
  const plans = tables.map((t) =>
    planReshape(
      t,
      sourceColumns.get(relLabel(t)) ?? new Set(),
      rows.filter((r) => r.schema_name === t.schema && r.table_name === t.table),
    ),
  );
  const refused = plans.filter((p) => p.problems.length);
  if (refused.length) {
    throw new SchemaMismatchError(
      `replica '${replica}': resync cannot bring ${refused.map((p) => `table ${relLabel(p.table)} to the source's columns (${p.problems.join('; ')})`).join(', nor ')}; ` +
        `make the replica's table match the source's (e.g. pg_dump --schema-only -t … from the source), then run pgferry replica resync ${replica} again; nothing was changed`,
    );
  }
  return plans;
}

/**
 * How many inheritance ancestors each given table has on this database: a
 * change to a parent's columns reaches its children, so parents go first.
 */
const INHERITANCE_DEPTH = `
SELECT w.ord,
       (WITH RECURSIVE up(oid) AS (
          SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid
          UNION SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN up ON i.inhrelid = up.oid)
        SELECT count(*) FROM up)::int AS depth
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(schema_name, table_name, ord)
JOIN pg_catalog.pg_namespace n ON n.nspname = w.schema_name
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.table_name`;

/**
 * Bring the given tables to the source's columns on the replica's
 * connection, in the caller's (swap) transaction: inheritance parents first,
 * each table planned just before its statements run (what a parent's change
 * did to its children is then seen). A statement the replica refuses (a view
 * of its own on a column to drop, a type it lacks) fails the resync naming
 * the table, the step and PostgreSQL's reason; the caller rolls everything
 * back. Returns what changed, for people: "public.items: column a dropped,
 * column b added".
 */
export async function runReshapes(c: Pick<pg.ClientBase, 'query'>, replica: string, tables: TableRef[], sourceColumns: ReadonlyMap<string, ReadonlySet<string>>): Promise<string[]> {
  if (!tables.length) return [];
  const { rows } = await c.query<{ ord: string; depth: string | number }>(INHERITANCE_DEPTH, [tables.map((t) => t.schema), tables.map((t) => t.table)]);
  const depth = new Map(rows.map((r) => [Number(r.ord) - 1, Number(r.depth)]));
  const ordered = tables.map((t, i) => ({ t, d: depth.get(i) ?? 0 })).sort((a, b) => a.d - b.d).map((x) => x.t);
  const said: string[] = [];
  for (const t of ordered) {
    const [p] = await planReshapes(c, replica, [t], sourceColumns);
    for (const s of p.steps) {
      try {
        await c.query(reshapeSql(p.table, s));
      } catch (err) {
        if (isTransient(err)) throw err;
        const detail = (err as { detail?: string }).detail;
        throw new SchemaMismatchError(
          `replica '${replica}': resync cannot reshape table ${relLabel(p.table)} to the source's columns (${stepLabel(s)}: ${describeCause(err)}${detail ? `: ${detail}` : ''}); ` +
            `nothing was changed: change or drop on the replica what stands in the way (or make the table match the source's by hand), then run pgferry replica resync ${replica} again`,
          { cause: err },
        );
      }
    }
    if (p.steps.length) said.push(`${relLabel(p.table)}: ${p.steps.map(describeReshapeStep).join(', ')}`);
  }
  return said;
}

function stepLabel(s: ReshapeStep): string {
  switch (s.kind) {
    case 'drop-column':
      return `drop column ${nameLabel(s.name)}`;
    case 'alter-type':
      return `change column ${nameLabel(s.name)} from ${s.from} to ${s.to}`;
    case 'add-column':
      return `add column ${nameLabel(s.name)} ${s.type}`;
  }
}

/**
 * A shadow table with the source's columns (as sent), so the copy of the
 * source's rows fits whatever the replica's table is like before the swap.
 */
export function shadowDdl(t: TableRef, shadow: TableRef): string {
  if (!t.columns) throw new SchemaMismatchError(`table ${relLabel(t)} comes without its columns (a copy started by an older pgferry); start the copy again`);
  for (const col of t.columns) {
    if (!isTypeName(col.type)) {
      throw new SchemaMismatchError(`table ${relLabel(t)}: column ${nameLabel(col.name)} has a type pgferry does not recognise as a type name (${JSON.stringify(col.type)}); pgferry cannot copy it`);
    }
  }
  return `CREATE UNLOGGED TABLE ${qualified(shadow.schema, shadow.table)} (${t.columns.map((col) => `${ident(col.name)} ${col.type}`).join(', ')})`;
}
