/**
 * Resync's partitions: after a gap a replica that mirrors the source's
 * partitioning can lack partitions the source created, or hold ones the
 * source detached or dropped, in the part of the log it lost. Its copy of
 * the root's rows would then not fit ("no partition … found for row"). So
 * `replica resync`, in its swap transaction after the TRUNCATE, brings each
 * captured root the replica partitions to the source's tree: partitions the
 * source does not have (by name, or with other bounds or another parent) are
 * dropped — empty by then —, and the source's missing ones are created with
 * its bounds (read into values and written back quoted: partition-bound.ts).
 * A replica that holds a root as a plain table is left as it is.
 */
import type pg from 'pg';
import { relLabel } from '../change';
import { describeCause, isTransient, SchemaMismatchError } from '../errors';
import { forValues, parseBound, partitionBy } from '../partition-bound';
import { qualified } from '../pg';
import type { TableRef } from '../tables';

export interface TreePartition {
  schema: string;
  table: string;
  parentSchema: string;
  parentTable: string;
  level: number;
  /** The bound as pg_get_expr prints it (with the fixed settings below). */
  bound: string;
  /** Its own key, when it is partitioned too. */
  key: { strategy: 'r' | 'l' | 'h'; keys: string[] | null } | null;
}

/** Bounds are printed with the session's settings: the same ones on both sides. */
const SETTINGS = `SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL IntervalStyle = 'postgres'; SET LOCAL extra_float_digits = 3; SET LOCAL TimeZone = 'UTC'; SET LOCAL standard_conforming_strings = on`;

const TREE = `
SELECT n.nspname::text AS schema, c.relname::text AS "table", pn.nspname::text AS parent_schema, pc.relname::text AS parent_table,
       t.level, pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound,
       pt.partstrat::text AS strategy,
       CASE WHEN pt.partrelid IS NULL OR 0 = ANY (pt.partattrs::int2[]) THEN NULL ELSE (
         SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.ord)
         FROM unnest(pt.partattrs::int2[]) WITH ORDINALITY AS k(num, ord)
         JOIN pg_catalog.pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = k.num) END AS keys
FROM pg_catalog.pg_partition_tree($1::regclass) t
JOIN pg_catalog.pg_class c ON c.oid = t.relid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_class pc ON pc.oid = t.parentrelid
JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
LEFT JOIN pg_catalog.pg_partitioned_table pt ON pt.partrelid = c.oid
WHERE t.level > 0 AND c.relkind IN ('r', 'p')
ORDER BY t.level, 1, 2`;

/** The partitions of each partitioned table among `tables`, as `c` (source or replica) has them; in a transaction of its own. */
export async function partitionTrees(c: pg.ClientBase, tables: TableRef[]): Promise<Map<string, TreePartition[]>> {
  const out = new Map<string, TreePartition[]>();
  await c.query('BEGIN');
  try {
    await c.query(SETTINGS);
    for (const t of tables) out.set(relLabel(t), await treeOf(c, t));
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
  return out;
}

async function treeOf(c: pg.ClientBase, t: TableRef): Promise<TreePartition[]> {
  const kind = (await c.query(`SELECT c.relkind::text AS k FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1)`, [qualified(t.schema, t.table)])).rows[0]?.k;
  if (kind !== 'p') return [];
  const { rows } = await c.query(TREE, [qualified(t.schema, t.table)]);
  return rows.map((r) => ({
    schema: r.schema,
    table: r.table,
    parentSchema: r.parent_schema,
    parentTable: r.parent_table,
    level: Number(r.level),
    bound: r.bound,
    key: r.strategy ? { strategy: r.strategy, keys: r.keys ?? null } : null,
  }));
}

const same = (a: TreePartition, b: TreePartition) =>
  a.parentSchema === b.parentSchema && a.parentTable === b.parentTable && forValues(parseBound(a.bound)) === forValues(parseBound(b.bound)) && JSON.stringify(a.key) === JSON.stringify(b.key);

/**
 * In the swap transaction (after the TRUNCATE): bring each root the replica
 * partitions to the source's tree. Returns what changed, for people.
 */
export async function alignPartitions(c: pg.ClientBase, replica: string, tables: TableRef[], source: Map<string, TreePartition[]>): Promise<string[]> {
  const said: string[] = [];
  await c.query(SETTINGS);
  for (const t of tables) {
    const want = source.get(relLabel(t)) ?? [];
    const have = await treeOf(c, t);
    if (!have.length && !want.length) continue;
    const kind = (await c.query(`SELECT c.relkind::text AS k FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1)`, [qualified(t.schema, t.table)])).rows[0]?.k;
    if (kind !== 'p') continue; // a plain table on the replica: its rows fit whatever the source's partitions
    const wanted = new Map(want.map((p) => [relLabel(p), p]));
    const dropped: string[] = [];
    const created: string[] = [];
    const run = async (sql: string, what: string) => {
      try {
        await c.query(sql);
      } catch (err) {
        if (isTransient(err)) throw err;
        throw new SchemaMismatchError(
          `replica '${replica}': resync cannot bring the partitions of ${relLabel(t)} to the source's (${what}: ${describeCause(err)}); nothing was changed: ` +
            `make the replica's partitions match the source's by hand (or make ${relLabel(t)} a plain table there), then run pgferry replica resync ${replica} again`,
          { cause: err },
        );
      }
    };
    // Top-down: a partition dropped takes its own partitions with it.
    for (const p of have) {
      const w = wanted.get(relLabel(p));
      if (w && same(p, w)) continue;
      const still = (await c.query(`SELECT to_regclass($1) IS NOT NULL AS yes`, [qualified(p.schema, p.table)])).rows[0].yes;
      if (still !== true && still !== 't') continue;
      await run(`DROP TABLE ${qualified(p.schema, p.table)}`, `drop partition ${relLabel(p)}`);
      dropped.push(relLabel(p));
    }
    const now = new Set((await treeOf(c, t)).map((p) => relLabel(p)));
    for (const p of want) {
      if (now.has(relLabel(p))) continue;
      const by = p.key ? partitionBy(p.key) : null;
      await run(
        `CREATE TABLE ${qualified(p.schema, p.table)} PARTITION OF ${qualified(p.parentSchema, p.parentTable)} ${forValues(parseBound(p.bound))}${by ? ` ${by}` : ''}`,
        `create partition ${relLabel(p)}`,
      );
      created.push(relLabel(p));
    }
    if (dropped.length || created.length) {
      said.push(`${relLabel(t)}: ${[...dropped.map((p) => `partition ${p} dropped`), ...created.map((p) => `partition ${p} created`)].join(', ')}`);
    }
  }
  return said;
}
