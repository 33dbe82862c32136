/**
 * A schema change reaching a replica, per the replica's `schema_changes`
 * policy:
 * - `apply` (default): the steps (schema-change.ts) run as DDL inside the
 *   batch's transaction, so the change commits with the data around it and
 *   the checkpoint; a step the replica refuses, or one that cannot be applied
 *   unattended (an unsafe cast, values the log does not carry), stops the
 *   replica at that position with the statements to run by hand.
 * - `stop`: every schema change stops the replica there, with the statements.
 * - `ignore`: nothing is done (later rows that do not fit stop the replica as
 *   any mismatch does).
 * A replica whose table already has the shape after the change (the operator
 * applied it by hand, then resumed) goes on without doing anything: that is
 * how `stop` resumes.
 *
 * Statements are built from the change's shapes, never from SQL the source
 * sent: names are quoted here, types pass `isTypeName`, a filled value is a
 * quoted literal.
 */
import type pg from 'pg';
import { relLabel, type SchemaChange, type TableShape, type TxnMessage } from '../change';
import { SchemaMismatchError, isRefusal } from '../errors';
import type { Logger } from '../logger';
import { escapeLiteral, ident, qualified } from '../pg';
import { describeSchemaChange, planSchemaChange, type SchemaPlan } from '../schema-change';

export type SchemaPolicy = 'apply' | 'stop' | 'ignore';
export const SCHEMA_POLICIES: readonly SchemaPolicy[] = ['apply', 'stop', 'ignore'];

/** The statements that carry out a plan on a replica, in order. */
export function schemaStatements(plan: SchemaPlan): string[] {
  let q = qualified(plan.table.schema, plan.table.table);
  let schema = plan.table.schema;
  const out: string[] = [];
  for (const s of plan.steps) {
    switch (s.kind) {
      case 'create-table': {
        const cols = s.shape.columns.map((c) => `${ident(c.name)} ${c.type}${c.notNull ? ' NOT NULL' : ''}`);
        const keys = s.shape.columns.filter((c) => c.key).map((c) => ident(c.name));
        if (keys.length) cols.push(`PRIMARY KEY (${keys.join(', ')})`);
        out.push(`CREATE TABLE ${q} (${cols.join(', ')})`);
        break;
      }
      case 'drop-column':
        out.push(`ALTER TABLE ${q} DROP COLUMN ${ident(s.name)}`);
        break;
      case 'rename-column':
        out.push(`ALTER TABLE ${q} RENAME COLUMN ${ident(s.from)} TO ${ident(s.to)}`);
        break;
      case 'drop-not-null':
        out.push(`ALTER TABLE ${q} ALTER COLUMN ${ident(s.name)} DROP NOT NULL`);
        break;
      case 'alter-type':
        out.push(`ALTER TABLE ${q} ALTER COLUMN ${ident(s.name)} TYPE ${s.to} USING ${ident(s.name)}::${s.to}`);
        break;
      case 'add-column': {
        const c = s.column;
        // The value existing rows hold goes in as a default for the ADD, then the default goes:
        // a replica's rows all come from the source, which sends every value.
        const fill = s.fill === null ? '' : ` DEFAULT ${escapeLiteral(s.fill)}::${c.type}`;
        out.push(`ALTER TABLE ${q} ADD COLUMN ${ident(c.name)} ${c.type}${fill}${c.notNull ? ' NOT NULL' : ''}`);
        if (fill) out.push(`ALTER TABLE ${q} ALTER COLUMN ${ident(c.name)} DROP DEFAULT`);
        break;
      }
      case 'set-not-null':
        out.push(`ALTER TABLE ${q} ALTER COLUMN ${ident(s.name)} SET NOT NULL`);
        break;
      case 'set-schema':
        out.push(`ALTER TABLE ${q} SET SCHEMA ${ident(s.schema)}`);
        schema = s.schema;
        q = qualified(schema, plan.table.table);
        break;
      case 'rename-table':
        out.push(`ALTER TABLE ${q} RENAME TO ${ident(s.to)}`);
        q = qualified(schema, s.to);
        break;
    }
  }
  return out;
}

/** The replica's columns of a table (name → [type with typmod, not null]); null when there is no such table. */
async function replicaShape(c: pg.ClientBase, t: { schema: string; table: string }): Promise<Map<string, [string, boolean]> | null> {
  const { rows } = await c.query(
    `SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
     WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`,
    [t.schema, t.table],
  );
  if (!rows.length) return null;
  return new Map(rows.filter((r) => r.attname !== null).map((r) => [r.attname as string, [r.type as string, r.attnotnull === true || r.attnotnull === 't']]));
}

/** The replica's table already has the shape after the change: its columns by name, type and nullability. */
async function alreadyThere(c: pg.ClientBase, after: TableShape, before: TableShape | null): Promise<boolean> {
  const have = await replicaShape(c, after);
  if (!have) return false;
  for (const col of after.columns) {
    if (col.generated) continue;
    const h = have.get(col.name);
    if (!h || h[0] !== col.type || h[1] !== col.notNull) return false;
  }
  const names = new Set(after.columns.map((x) => x.name));
  return !(before?.columns ?? []).some((col) => !col.generated && !names.has(col.name) && have.has(col.name));
}

/**
 * Apply one schema change on the replica's connection, inside the batch's
 * transaction, per `policy`. Throws a SchemaMismatchError at the change's
 * source position when the replica must stop.
 */
export async function applySchemaChange(
  c: pg.ClientBase,
  o: { replica: string; policy: SchemaPolicy; log: Logger },
  m: TxnMessage,
  ch: SchemaChange,
): Promise<'applied' | 'already' | 'ignored'> {
  const said = describeSchemaChange(ch);
  if (o.policy === 'ignore') {
    o.log.info({ replica: o.replica, lsn: m.lsn, change: said }, 'schema change ignored (schema_changes: ignore)');
    return 'ignored';
  }
  const plan = planSchemaChange(ch);
  const dropped = new Set(plan.steps.flatMap((s) => (s.kind === 'drop-column' ? [s.name] : [])));
  const replaced = plan.steps.some((s) => s.kind === 'add-column' && dropped.has(s.column.name)); // DROP x, ADD x: same names, new values
  if (ch.after && !replaced && (await alreadyThere(c, ch.after, ch.before))) {
    o.log.info({ replica: o.replica, lsn: m.lsn, change: said }, 'schema change already on the replica');
    return 'already';
  }
  const statements = schemaStatements(plan);
  const where = `replica '${o.replica}': schema change at source position ${m.lsn}: ${said}`;
  const byHand = (statements.length ? `apply it to the replica by hand (${statements.join('; ')})` : `make the replica's table ${relLabel(plan.target)} match the source's`) + `, then run pgferry replica resume ${o.replica}`;
  if (o.policy === 'stop') throw new SchemaMismatchError(`${where}; the replica's schema_changes policy is stop: ${byHand}`, { sourceLsn: m.lsn });
  if (plan.unsafe.length) throw new SchemaMismatchError(`${where}; not applied unattended because ${plan.unsafe.join('; ')}: ${byHand}`, { sourceLsn: m.lsn });
  await c.query('SAVEPOINT pgferry_schema');
  try {
    for (const st of statements) await c.query(st);
  } catch (err) {
    if (!isRefusal(err)) throw err;
    await c.query('ROLLBACK TO SAVEPOINT pgferry_schema');
    const e = err as { message?: string; code?: string };
    throw new SchemaMismatchError(`${where}; the replica refused it: ${e.message} [${e.code}]; ${byHand}`, { cause: err, sourceLsn: m.lsn });
  }
  await c.query('RELEASE SAVEPOINT pgferry_schema');
  o.log.info({ replica: o.replica, lsn: m.lsn, change: said }, 'schema change applied');
  return 'applied';
}
