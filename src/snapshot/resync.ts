/**
 * `pgferry replica resync <name>`: rebuild a replica (one that needs a
 * resync after a gap, or one an operator no longer trusts) from a fresh
 * snapshot, without ever showing readers empty or half-filled tables:
 *
 * 1. copy the snapshot into shadow tables (schema pgferry_shadow, unlogged);
 * 2. in ONE replica transaction: lock the replica's progress row (a batch in
 *    flight finishes first), TRUNCATE the replicated tables, fill them from
 *    the shadows (parents before children), set the progress row to the
 *    snapshot's position — readers wait for this transaction and then see
 *    the new content whole;
 * 3. drop the shadows. The replica's workflow then catches up from the
 *    snapshot's position.
 *
 * The tables keep their identity, indexes, grants, views and foreign keys;
 * their shape follows the source's (after a gap the replica can lag it by
 * the schema changes it lost): a captured table the replica lacks is created
 * from the source's definition (create-tables.ts), and in the swap, after the
 * TRUNCATE, each table's columns are brought to the source's (reshape.ts).
 * A table the replica still has under a name the source no longer captures
 * (renamed or dropped there) is left as it is, and said.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { Config } from '../config';
import { replicaShare, replicaUrl, requireSourceUrl } from '../config';
import { logger } from '../logger';
import { connectRabbit } from '../changelog/rabbit';
import type { TableRef } from '../tables';
import { relLabel } from '../change';
import { isTransient, SchemaMismatchError } from '../errors';
import { prepareCapture } from '../capture/prepare';
import { ensureTargetSchema, missingTables } from '../apply/target';
import { connectPg, ident, qualified, withClient } from '../pg';
import { withRetry } from '../retry';
import { AddResult, copyFromSnapshot } from './add';
import type { TableProgress } from './copy';
import { ProgressStore } from '../apply/progress-store';
import { lockReplicaTables, tableKey, TableRegistry } from '../apply/table-registry';
import { cannotCreate, createTables, tableDefinitions, type TableDefinition } from './create-tables';
import { planReshapes, runReshapes, shadowDdl } from './reshape';
import { alignPartitions, partitionTrees, type TreePartition } from './partition-trees';

const SHADOW_SCHEMA = 'pgferry_shadow';

/** A table's shadow: its copy waiting to be swapped in, in `schema` (resync's own by default). */
export function shadowOf(t: TableRef, schema = SHADOW_SCHEMA): TableRef {
  return { schema, table: `s_${createHash('sha1').update(JSON.stringify([t.schema, t.table])).digest('hex').slice(0, 20)}` };
}

/**
 * The statement that fills a table from its shadow: the sent columns, identity values kept. A
 * table with no columns (or only generated ones) gets one row per shadow row (`()` is not SQL).
 */
export function fillFromShadowSql(t: TableRef, shadow: TableRef): string {
  if (!t.columns) throw new SchemaMismatchError(`table ${relLabel(t)} comes without its columns (a copy started by an older pgferry); start the copy again`);
  const cols = t.columns.map((col) => ident(col.name)).join(', ');
  if (!cols) return `INSERT INTO ${qualified(t.schema, t.table)} SELECT FROM ${qualified(shadow.schema, shadow.table)}`;
  return `INSERT INTO ${qualified(t.schema, t.table)} (${cols}) OVERRIDING SYSTEM VALUE SELECT ${cols} FROM ${qualified(shadow.schema, shadow.table)}`;
}

export async function resyncReplica(
  config: Config,
  name: string,
  o: { parallel: number; say: (line: string) => void; onProgress?: (tables: TableProgress[]) => void },
): Promise<AddResult> {
  requireSourceUrl(config);
  const url = replicaUrl(config, name);
  const source = config.source.name;
  // Held to the end: no table add or remove of this replica meanwhile (table-registry.ts).
  const lock = await connectPg(`replica '${name}'`, url);
  const rabbit = await withRetry(() => connectRabbit(config.rabbitmqUrl), config.connectWaitMs, logger).catch(async (err) => {
    await lock.end().catch(() => undefined);
    throw err;
  });
  try {
    await ensureTargetSchema(lock);
    await lockReplicaTables(lock, name, 'the resync');
    const prepared = await prepareCapture(config, rabbit);
    for (const warning of prepared.warnings) o.say(`WARNING ${warning}`);
    const tables = replicaShare(config, name, prepared.tables);
    // The source's definitions: what a missing table is created from, and which columns the source still has.
    const [defs, trees] = await withClient(`source '${source}'`, requireSourceUrl(config), async (s) => [await tableDefinitions(s, tables), await partitionTrees(s, tables)] as const);
    await withClient(`replica '${name}'`, url, async (c) => {
      for (const warning of await leftAsTheyAre(c, name, tables)) o.say(`WARNING ${warning}`);
      // What the swap will do, checked now so that a table it cannot reshape fails before the copy.
      const missing = new Set((await missingTables(c, tables)).map((t) => tableKey(t.schema, t.table)));
      await planReshapes(c, name, tables.filter((t) => !missing.has(tableKey(t.schema, t.table))), sourceColumns(defs));
      await c.query(`DROP SCHEMA IF EXISTS ${ident(SHADOW_SCHEMA)} CASCADE; CREATE SCHEMA ${ident(SHADOW_SCHEMA)}`);
      for (const t of tables) {
        // The source's columns, without constraints: the shadow only holds the copy for a moment, and the
        // replica's table takes the source's shape in the swap.
        try {
          await c.query(shadowDdl(t, shadowOf(t)));
        } catch (err) {
          if (isTransient(err) || err instanceof SchemaMismatchError) throw err;
          const e = err as { message?: string; code?: string };
          throw new SchemaMismatchError(
            `replica '${name}': resync cannot hold table ${relLabel(t)} with the source's columns (${e.message}${e.code ? ` [${e.code}]` : ''}); ` +
              `create the types it needs on the replica (pg_dump --schema-only from the source), then run pgferry replica resync ${name} again; nothing was changed`,
            { cause: err },
          );
        }
      }
    });
    const copied = await copyFromSnapshot({ config, replica: name, rabbit, tables, parallel: o.parallel, target: shadowOf, say: o.say, onProgress: o.onProgress });
    o.say(`replica '${name}': swapping in the copy (one transaction)`);
    const changed = await withClient(`replica '${name}'`, url, (c) => swapIn(c, name, source, tables, defs, trees, copied));
    if (changed.length) o.say(`resync ${name}: ${changed.join('; ')}`);
    return { ...copied, reshaped: changed };
  } finally {
    await rabbit.close().catch(() => undefined);
    await lock.end().catch(() => undefined);
  }
}

/** Every column each source table has, generated and unpublished ones included, by table (relLabel). */
function sourceColumns(defs: TableDefinition[]): Map<string, Set<string>> {
  return new Map(defs.map((d) => [relLabel(d.table), new Set(d.columns.map((c) => c.column_name))]));
}

/**
 * Tables the replica took that the source no longer captures for it, and
 * that it still has: pgferry cannot tell a renamed table from another, so
 * the resync leaves them as they are (and its registry forgets them).
 */
async function leftAsTheyAre(c: pg.ClientBase, replica: string, tables: TableRef[]): Promise<string[]> {
  const captured = new Set(tables.map((t) => tableKey(t.schema, t.table)));
  const gone = (await TableRegistry.list(c, replica)).filter((r) => r.state !== 'removed' && !captured.has(tableKey(r.schema, r.table)));
  const absent = new Set((await missingTables(c, gone)).map((t) => tableKey(t.schema, t.table)));
  return gone
    .filter((r) => !absent.has(tableKey(r.schema, r.table)))
    .map((r) => `replica '${replica}': table ${relLabel(r)} is no longer captured (renamed or dropped on the source); it was left as it is (drop it on the replica once nothing needs it)`);
}

/** The swap, in one replica transaction; returns what changed in the tables' shapes, for people. */
async function swapIn(c: pg.ClientBase, replica: string, source: string, tables: TableRef[], defs: TableDefinition[], trees: Map<string, TreePartition[]>, at: AddResult): Promise<string[]> {
  let changed: string[];
  await c.query('BEGIN');
  try {
    await ProgressStore.lock(c, replica, source);
    // The rebuilt copy replaces whatever an interrupted `replica add --snapshot` left.
    await c.query('DELETE FROM pgferry.snapshot_claims WHERE replica = $1', [replica]);
    // Read again with the progress row locked: a batch applied during the copy may have changed the shapes.
    const missing = new Set((await missingTables(c, tables)).map((t) => tableKey(t.schema, t.table)));
    const created = await createTables(
      c,
      defs.filter((d) => missing.has(tableKey(d.table.schema, d.table.table))),
    ).catch((err) => {
      throw isTransient(err) ? err : cannotCreate(replica, err, `then run pgferry replica resync ${replica} again; nothing was changed`);
    });
    await c.query(`TRUNCATE ${tables.map((t) => qualified(t.schema, t.table)).join(', ')}`);
    const reshaped = await runReshapes(c, replica, tables.filter((t) => !missing.has(tableKey(t.schema, t.table))), sourceColumns(defs));
    // Partitions the lost part of the log created, detached or dropped: the copy must fit the replica's tree.
    const repartitioned = await alignPartitions(c, replica, tables, trees);
    changed = [...created.map((t) => `${t} created`), ...reshaped, ...repartitioned];
    for (const t of await parentsFirst(c, tables)) {
      await c.query(fillFromShadowSql(t, shadowOf(t)));
    }
    await ProgressStore.set(c, replica, source, { lsn: at.position, offset: at.offset, stream: at.stream });
    await TableRegistry.reset(c, replica, tables);
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
  await c.query(`DROP SCHEMA ${ident(SHADOW_SCHEMA)} CASCADE`);
  return changed;
}

/**
 * Foreign keys among the given tables on this database: (child, parent)
 * pairs as "schema.table" JSON, so rows can be inserted parents first.
 */
const FK_ORDER = `
SELECT pg_catalog.to_json(ARRAY[cn.nspname, c.relname])::text AS child,
       pg_catalog.to_json(ARRAY[pn.nspname, p.relname])::text AS parent
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_catalog.pg_class p ON p.oid = k.confrelid
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
WHERE k.contype = 'f' AND k.conrelid <> k.confrelid
  AND (cn.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))
  AND (pn.nspname, p.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))`;

/** The tables ordered so that every table comes after the tables its foreign keys reference. */
export async function parentsFirst(c: pg.ClientBase, tables: TableRef[]): Promise<TableRef[]> {
  const key = (schema: string, table: string) => JSON.stringify([schema, table]);
  const { rows } = await c.query<{ child: string; parent: string }>(FK_ORDER, [tables.map((t) => t.schema), tables.map((t) => t.table)]);
  const parents = new Map<string, Set<string>>();
  for (const r of rows) {
    const [cs, ct] = JSON.parse(r.child);
    const [ps, pt] = JSON.parse(r.parent);
    const k = key(cs, ct);
    parents.set(k, (parents.get(k) ?? new Set()).add(key(ps, pt)));
  }
  const done = new Set<string>();
  const out: TableRef[] = [];
  const visit = (t: TableRef, path: Set<string>) => {
    const k = key(t.schema, t.table);
    if (done.has(k) || path.has(k)) return; // a cycle of foreign keys: keep the order we have
    path.add(k);
    for (const p of parents.get(k) ?? []) {
      const parent = tables.find((x) => key(x.schema, x.table) === p);
      if (parent) visit(parent, path);
    }
    done.add(k);
    out.push(t);
  };
  for (const t of tables) visit(t, new Set());
  return out;
}
