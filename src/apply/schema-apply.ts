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
import { relLabel, type PartitionChange, type SchemaChange, type TableShape, type TxnMessage } from '../change';
import { boundCondition, forValues, parseBound, partitionBy } from '../partition-bound';
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
      case 'drop-table':
        // No CASCADE: a view or key of the replica's own on the table stops the replica, named.
        out.push(`DROP TABLE ${q}`);
        break;
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
  o: { replica: string; policy: SchemaPolicy; log: Logger; takesNewTables?: boolean },
  m: TxnMessage,
  ch: SchemaChange,
): Promise<'applied' | 'already' | 'ignored'> {
  const said = describeSchemaChange(ch);
  if (ch.partition && ch.after) return applyPartitionChange(c, o, m, ch.after, ch.partition, said);
  const plan = planSchemaChange(ch);
  const where = `replica '${o.replica}': schema change at source position ${m.lsn}: ${said}`;
  if (plan.steps[0]?.kind === 'create-table' && (await holdsRows(c, plan.target))) {
    // A table the source creates new is empty there: rows here are another table's history (a DROP
    // TABLE the replica never got or ignored, or rows written by hand). Merging them is divergence,
    // whatever the policy.
    throw new SchemaMismatchError(
      `${where}; the replica already has a table ${relLabel(plan.target)} holding rows, while the source's table is new and starts empty: ` +
        `drop or empty the replica's table (or rename it to keep its rows), then run pgferry replica resume ${o.replica}`,
      { sourceLsn: m.lsn },
    );
  }
  if (o.policy === 'ignore') {
    o.log.info({ replica: o.replica, lsn: m.lsn, change: said }, 'schema change ignored (schema_changes: ignore)');
    return 'ignored';
  }
  const dropped = new Set(plan.steps.flatMap((s) => (s.kind === 'drop-column' ? [s.name] : [])));
  const replaced = plan.steps.some((s) => s.kind === 'add-column' && dropped.has(s.column.name)); // DROP x, ADD x: same names, new values
  const gone = plan.steps[0]?.kind === 'drop-table' && !(await replicaShape(c, plan.table));
  if (gone || (ch.after && !replaced && (await alreadyThere(c, ch.after, ch.before)))) {
    o.log.info({ replica: o.replica, lsn: m.lsn, change: said }, 'schema change already on the replica');
    return 'already';
  }
  const statements = schemaStatements(plan);
  const byHand = (statements.length ? `apply it to the replica by hand (${statements.join('; ')})` : `make the replica's table ${relLabel(plan.target)} match the source's`) + `, then run pgferry replica resume ${o.replica}`;
  if (o.policy === 'stop') throw new SchemaMismatchError(`${where}; the replica's schema_changes policy is stop: ${byHand}`, { sourceLsn: m.lsn });
  if (plan.unsafe.length) throw new SchemaMismatchError(`${where}; not applied unattended because ${plan.unsafe.join('; ')}: ${byHand}`, { sourceLsn: m.lsn });
  await runStatements(c, statements, [], (err) => `${where}; the replica refused it: ${err.message} [${err.code}]; ${byHand}`, m.lsn);
  o.log.info({ replica: o.replica, lsn: m.lsn, change: said }, 'schema change applied');
  return 'applied';
}

/** Run statements under a savepoint; a refusal rolls them back and stops the replica with `why`'s words. */
async function runStatements(c: pg.ClientBase, statements: string[], params: unknown[][], why: (e: { message?: string; code?: string }) => string, lsn: string): Promise<void> {
  await c.query('SAVEPOINT pgferry_schema');
  try {
    for (const [i, st] of statements.entries()) await c.query(st, params[i]);
  } catch (err) {
    if (!isRefusal(err)) throw err;
    await c.query('ROLLBACK TO SAVEPOINT pgferry_schema');
    throw new SchemaMismatchError(why(err as { message?: string; code?: string }), { cause: err, sourceLsn: lsn });
  }
  await c.query('RELEASE SAVEPOINT pgferry_schema');
}

/** Whether the replica has the table and it holds at least one row. */
async function holdsRows(c: pg.ClientBase, t: { schema: string; table: string }): Promise<boolean> {
  if (!(await replicaShape(c, t))) return false;
  return (await c.query(`SELECT EXISTS (SELECT 1 FROM ${qualified(t.schema, t.table)}) AS yes`)).rows[0].yes === true;
}

/** A relation on the replica: its kind ('r' table, 'p' partitioned), whether it is a partition, and its top root's name. */
async function relationOnReplica(c: pg.ClientBase, t: { schema: string; table: string }): Promise<{ kind: string; partitionOf: string | null } | null> {
  const { rows } = await c.query(
    `SELECT c.relkind::text AS kind,
            CASE WHEN c.relispartition THEN (SELECT rn.nspname || '.' || rc.relname FROM pg_catalog.pg_class rc JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace
                                             WHERE rc.oid = pg_catalog.pg_partition_root(c.oid)) END AS root
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`,
    [t.schema, t.table],
  );
  return rows.length ? { kind: rows[0].kind as string, partitionOf: (rows[0].root as string | null) ?? null } : null;
}

/**
 * Partition maintenance of a root the replica takes (change.ts
 * `PartitionChange`). A replica that mirrors the source's partitioning (its
 * table is partitioned and has the partition by name under the same root)
 * follows the structure: CREATE … PARTITION OF, ATTACH, DETACH, DROP,
 * TRUNCATE of that partition (structure per the schema_changes policy; a
 * TRUNCATE is data and always applied). Any other replica — partitioned
 * differently, or not at all — gets the rows' part of it: the rows a
 * truncated, detached or dropped partition held leave its root (DELETE with
 * the partition's bounds). What neither can carry (rows attached with a
 * partition the log never sent, bounds that are no condition over columns)
 * stops the replica with the way out.
 */
async function applyPartitionChange(
  c: pg.ClientBase,
  o: { replica: string; policy: SchemaPolicy; log: Logger; takesNewTables?: boolean },
  m: TxnMessage,
  root: TableShape,
  p: PartitionChange,
  said: string,
): Promise<'applied' | 'already' | 'ignored'> {
  const where = `replica '${o.replica}': partition change at source position ${m.lsn}: ${said}`;
  const rootName = relLabel(root);
  const rootQ = qualified(root.schema, root.table);
  const partQ = qualified(p.schema, p.table);
  const parent = p.parent ?? root;
  const parentQ = qualified(parent.schema, parent.table);
  const [onRoot, onPart, onParent] = await Promise.all([relationOnReplica(c, root), relationOnReplica(c, p), relationOnReplica(c, parent)]);
  const rootKey = `${root.schema}.${root.table}`;
  const columns = root.columns.filter((col) => !col.generated).map((col) => ident(col.name)).join(', ');
  const mirrored = onRoot?.kind === 'p' && onPart?.partitionOf === rootKey;
  const parentThere = onRoot?.kind === 'p' && (parent === root || (parent.schema === root.schema && parent.table === root.table) || (onParent?.kind === 'p' && onParent.partitionOf === rootKey));
  const bound = () => {
    const b = p.chain[0];
    if (!b) throw new SchemaMismatchError(`${where}; the source sent no bound for the partition`, { sourceLsn: m.lsn });
    return forValues(parseBound(b.bound));
  };
  const done = (what: 'applied' | 'already' | 'ignored', note: string) => {
    o.log.info({ replica: o.replica, lsn: m.lsn, change: said }, note);
    return what;
  };
  const run = async (statements: string[], params: unknown[][] = []) => {
    await runStatements(c, statements, params, (e) => `${where}; the replica refused ${statements.join('; ')}: ${e.message} [${e.code}]; make ${rootName} hold the source's rows, then run pgferry replica resume ${o.replica}`, m.lsn);
    return done('applied', 'partition change applied');
  };
  /** Structure the policy may refuse: stop names the statements, ignore leaves the structure (rows are still carried). */
  const structural = async (statements: string[], otherwise: () => Promise<'applied' | 'already' | 'ignored'>) => {
    if (o.policy === 'apply') return run(statements);
    if (o.policy === 'stop') {
      throw new SchemaMismatchError(`${where}; the replica's schema_changes policy is stop: apply it to the replica by hand (${statements.join('; ')}), then run pgferry replica resume ${o.replica}`, { sourceLsn: m.lsn });
    }
    return otherwise();
  };
  /**
   * The partition's rows leave the root, whatever the replica's partitioning. A detached
   * partition is a table of its own on the source; a replica that takes every table gets it
   * too, with those rows (it is in the replica's table registry from here: Applier.follow).
   */
  const deleteRows = async (keep = false) => {
    if (!onRoot) return done('already', 'partition change of a table the replica does not have');
    const params: unknown[] = [];
    const cond = boundCondition(p.chain, params);
    if (cond !== null && keep && o.takesNewTables && !onPart) {
      return run(
        [`CREATE TABLE ${partQ} (LIKE ${rootQ} INCLUDING ALL)`, `INSERT INTO ${partQ} (${columns}) SELECT ${columns} FROM ${rootQ} WHERE ${cond}`, `DELETE FROM ${rootQ} WHERE ${cond}`],
        [[], params, params],
      );
    }
    if (cond === null) {
      // Nothing to delete (the root was truncated just before: a TRUNCATE of the root fires each partition's trigger too).
      if (!(await holdsRows(c, root))) return done('already', 'partition change: the root holds no rows');
      throw new SchemaMismatchError(
        `${where}; the replica's ${rootName} does not have the partition ${relLabel(p)} under it, and its bounds (${p.chain.map((l) => l.bound).join(' within ')}) are no condition over columns ` +
          `(a hash or DEFAULT partition, or an expression key): delete those rows from the replica's ${rootName} by hand (or partition it as the source is), then run pgferry replica resume ${o.replica}`,
        { sourceLsn: m.lsn },
      );
    }
    return run([`DELETE FROM ${rootQ} WHERE ${cond}`], [params]);
  };
  const rowsNotCarried = () =>
    new SchemaMismatchError(
      `${where}; the partition held rows when it was attached, and the log does not carry them (the table was not captured on its own before): ` +
        `copy the table again with pgferry table add ${rootName} --replace --only ${o.replica}, or load those rows by hand and run pgferry replica resume ${o.replica}`,
      { sourceLsn: m.lsn },
    );
  switch (p.action) {
    case 'truncate':
      return mirrored ? run([`TRUNCATE ${partQ}`]) : deleteRows();
    case 'detach':
      return mirrored ? structural([`ALTER TABLE ${parentQ} DETACH PARTITION ${partQ}`], () => deleteRows()) : deleteRows(true);
    case 'drop':
      return mirrored ? structural([`DROP TABLE ${partQ}`], () => deleteRows()) : deleteRows();
    case 'create': {
      if (mirrored) return done('already', 'partition already on the replica');
      if (!parentThere || onPart) return done('already', 'the replica is partitioned otherwise: rows go where its own partitions say');
      const by = p.partitionKey ? partitionBy(p.partitionKey) : null;
      return structural([`CREATE TABLE ${partQ} PARTITION OF ${parentQ} ${bound()}${by ? ` ${by}` : ''}`], async () => done('ignored', 'partition not created (schema_changes: ignore)'));
    }
    case 'attach': {
      if (mirrored) return done('already', 'partition already attached on the replica');
      const standalone = onPart !== null && onPart.partitionOf === null;
      if (p.hasRows && !(p.captured && standalone)) throw rowsNotCarried();
      if (parentThere) {
        if (standalone) return structural([`ALTER TABLE ${parentQ} ATTACH PARTITION ${partQ} ${bound()}`], async () => { throw rowsNotCarried(); });
        const by = p.partitionKey ? partitionBy(p.partitionKey) : null;
        return structural([`CREATE TABLE ${partQ} PARTITION OF ${parentQ} ${bound()}${by ? ` ${by}` : ''}`], async () => done('ignored', 'partition not created (schema_changes: ignore)'));
      }
      if (!p.hasRows) return done('already', 'an empty partition attached: nothing for a replica partitioned otherwise');
      // Not partitioned here: the rows the replica holds in its copy of the table move into the root, as on the source.
      return run([`INSERT INTO ${rootQ} (${columns}) SELECT ${columns} FROM ${partQ}`, `DROP TABLE ${partQ}`]);
    }
  }
}
