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
 * Only the rows change: the tables keep their identity, indexes, grants,
 * views and foreign keys.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { Config } from '../config';
import { replicaShare, replicaUrl, requireSourceUrl } from '../config';
import { logger } from '../logger';
import { connectRabbit } from '../changelog/rabbit';
import type { TableRef } from '../tables';
import { relLabel } from '../change';
import { SchemaMismatchError } from '../errors';
import { prepareCapture } from '../capture/prepare';
import { ensureTargetSchema, prepareTarget } from '../apply/target';
import { connectPg, ident, qualified, withClient } from '../pg';
import { withRetry } from '../retry';
import { AddResult, copyFromSnapshot } from './add';
import type { TableProgress } from './copy';
import { ProgressStore } from '../apply/progress-store';
import { lockReplicaTables, TableRegistry } from '../apply/table-registry';

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
    const tables = replicaShare(config, name, (await prepareCapture(config, rabbit)).tables);
    await withClient(`replica '${name}'`, url, async (c) => {
      // Every captured table is copied, joined or not: after the swap the replica takes them all.
      for (const warning of await prepareTarget(c, name, tables, { joining: tables })) o.say(`WARNING ${warning}`);
      await c.query(`DROP SCHEMA IF EXISTS ${ident(SHADOW_SCHEMA)} CASCADE; CREATE SCHEMA ${ident(SHADOW_SCHEMA)}`);
      for (const t of tables) {
        // The replica's own column definitions, without constraints: the shadow only holds rows for a moment.
        await c.query(`CREATE UNLOGGED TABLE ${qualified(shadowOf(t).schema, shadowOf(t).table)} (LIKE ${qualified(t.schema, t.table)} INCLUDING GENERATED)`);
      }
    });
    const copied = await copyFromSnapshot({ config, replica: name, rabbit, tables, parallel: o.parallel, target: shadowOf, say: o.say, onProgress: o.onProgress });
    o.say(`replica '${name}': swapping in the copy (one transaction)`);
    await withClient(`replica '${name}'`, url, (c) => swapIn(c, name, source, tables, copied));
    return copied;
  } finally {
    await rabbit.close().catch(() => undefined);
    await lock.end().catch(() => undefined);
  }
}

async function swapIn(c: pg.ClientBase, replica: string, source: string, tables: TableRef[], at: AddResult): Promise<void> {
  await c.query('BEGIN');
  try {
    await ProgressStore.lock(c, replica, source);
    // The rebuilt copy replaces whatever an interrupted `replica add --snapshot` left.
    await c.query('DELETE FROM pgferry.snapshot_claims WHERE replica = $1', [replica]);
    await c.query(`TRUNCATE ${tables.map((t) => qualified(t.schema, t.table)).join(', ')}`);
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
