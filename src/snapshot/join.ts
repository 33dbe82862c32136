/**
 * Tables joining and leaving a running pipeline: `pgferry table add` and
 * `pgferry table remove`. The other tables keep streaming throughout; what
 * a replica applies changes at a batch boundary through its registry
 * (src/apply/table-registry.ts).
 *
 * Joining, per replica:
 * 1. capture is prepared from the configuration (the publication altered, or
 *    the capture trigger installed): the table must be in the configured
 *    selection, which is what `up` keeps capturing;
 * 2. with the replica's checkpoint locked (no batch in flight), the table is
 *    registered `copying`: from the next batch on, its changes are kept in
 *    the replica (table_pending), in the batch's transaction;
 * 3. a snapshot at position S is exported and the table copied from it into
 *    a shadow table — the stream's transactions at or before S are in it;
 * 4. the swap, one replica transaction with the checkpoint locked: the
 *    table's rows are replaced by the shadow's, the kept changes after S are
 *    applied in order, and the table is `ready` from S. Readers see the
 *    table whole, never half copied.
 * Every change of the table is applied exactly once: a transaction the
 * replica passed before step 2 committed before the snapshot (step 3), one
 * passed later is kept, and the swap applies only those after S. A join that
 * fails at any step is run again from the start; what was kept stays kept.
 *
 * The table's shape may change meanwhile. A schema change kept after S is
 * applied at the swap, in order, as streaming applies one (a RENAME moves
 * the table and its registry entry: route() follows a kept RENAME, so rows
 * under the new name are kept too). One at or before S is in the snapshot,
 * but the copy was made with the columns known before it: the replica's
 * table takes the kept changes' shape (their rows are dropped: the next
 * snapshot holds them) and the copy is made again. A join run again after
 * a failure starts the same way, so it takes what its earlier attempt kept.
 *
 * Removing: with the checkpoint locked, the table becomes `removed`: no
 * later change is applied; its rows stay on the replica.
 */
import type pg from 'pg';
import type { ChannelModel } from 'amqplib';
import type { Config } from '../config';
import { parseTableName, replicaSchemaPolicy, replicaShare, replicaTables, replicaUrl, requireSourceUrl } from '../config';
import { relLabel, type SchemaChange, type TxnMessage } from '../change';
import { ConfigError, SchemaMismatchError, SourceError } from '../errors';
import { logger } from '../logger';
import { connectRabbit } from '../changelog/rabbit';
import type { TableRef } from '../tables';
import { prepareCapture } from '../capture/prepare';
import { captureMode } from '../capture/mode';
import { capturesSchemaChanges } from '../capture/schema-capture';
import { resolveTables } from '../capture/tables';
import { checkNoUnfinishedCopy, ensureTargetSchema, missingTables, prepareTarget } from '../apply/target';
import { replicaRoleAdvice, useReplicaRole } from '../apply/session';
import { compareLsn, ZERO_LSN } from '../lsn';
import { ProgressStore } from '../apply/progress-store';
import { Applier } from '../apply/applier';
import { windowFor } from '../apply/net-apply';
import { applySchemaChange } from '../apply/schema-apply';
import { lockReplicaTables, tableKey, TableRegistry } from '../apply/table-registry';
import { ident, qualified, withClient } from '../pg';
import { withRetry } from '../retry';
import { copyFromSnapshot } from './add';
import { createMissingTables } from './create-tables';
import { fillFromShadowSql, parentsFirst, shadowOf } from './resync';
import type { TableProgress } from './copy';

/** Where a join's copies wait for their swap: apart from resync's shadows. */
const JOIN_SCHEMA = 'pgferry_join';

export interface JoinOptions {
  /** The replicas to join the tables to (default: every configured replica whose tables include them). */
  replicas?: string[];
  createTables: boolean;
  /** Replace rows the replica's table already holds (default: refuse a table with rows). */
  replace: boolean;
  parallel: number;
  say: (line: string) => void;
  onProgress?: (replica: string, tables: TableProgress[]) => void;
}

export interface JoinResult {
  replica: string;
  tables: string[];
  /** The snapshot's source position: the tables' changes after it come from the stream. */
  position: string;
  rows: number;
  /** Changes that arrived during the copy, kept and applied at the swap. */
  replayed: number;
  created: string[];
}

export async function joinTables(config: Config, specs: string[], o: JoinOptions): Promise<JoinResult[]> {
  const sourceUrl = requireSourceUrl(config);
  const source = config.source.name;
  const wanted = await withClient(`source '${source}'`, sourceUrl, async (c) => {
    const tables = await resolveTables(c, source, specs);
    await checkSelected(c, config, tables);
    return tables;
  });
  const rabbit = await withRetry(() => connectRabbit(config.rabbitmqUrl), config.connectWaitMs, logger);
  try {
    // Step 1: capture as the configuration says, which now includes the tables.
    const prepared = await prepareCapture(config, rabbit);
    for (const warning of prepared.warnings) o.say(`WARNING ${warning}`);
    const captured = wanted.map((t) => {
      const found = prepared.tables.find((p) => p.schema === t.schema && p.table === t.table);
      if (!found) {
        throw new SourceError(`source '${source}': table ${relLabel(t)} is not captured (${captureMode(config).notCaptured(source)}); add it to the publication, then run this again`);
      }
      return found;
    });
    const schemaChangesCaptured = await withClient(`source '${source}'`, sourceUrl, capturesSchemaChanges).catch(() => false);
    const results: JoinResult[] = [];
    const targets = targetReplicas(config, captured, o.replicas);
    for (const name of targets) {
      const tables = replicaShare(config, name, captured);
      const r = await joinReplica({ config, name, rabbit, tables, share: replicaShare(config, name, prepared.tables), schemaChangesCaptured, named: Boolean(o.replicas?.length), o });
      if (r) results.push(r);
    }
    if (!results.length) {
      throw new ConfigError(`every replica already takes table ${captured.map((t) => relLabel(t)).join(', ')}; to copy it again from a fresh snapshot pass --replace`);
    }
    return results;
  } finally {
    await rabbit.close().catch(() => undefined);
  }
}

/** A table joins only if the configuration captures it: otherwise the next `up` would stop capturing it again. */
async function checkSelected(c: pg.Client, config: Config, tables: TableRef[]): Promise<void> {
  const source = config.source.name;
  const key = (t: { schema: string; table: string }) => tableKey(t.schema, t.table);
  if (config.source.tables?.length) {
    const selected = new Set((await resolveTables(c, source, [...config.source.tables])).map(key));
    const out = tables.filter((t) => !selected.has(key(t))).map((t) => relLabel(t));
    if (out.length) {
      throw new ConfigError(
        `table ${out.join(', ')} is not in the source's tables (config sources[].tables, PGFERRY_TABLES or --tables); ` +
          `add ${out.length > 1 ? 'them' : 'it'} there first, so that every later pgferry up keeps capturing ${out.length > 1 ? 'them' : 'it'}, then run this again`,
      );
    }
  }
  if (config.source.exclude?.length) {
    const excluded = new Set((await resolveTables(c, source, [...config.source.exclude])).map(key));
    const out = tables.filter((t) => excluded.has(key(t))).map((t) => relLabel(t));
    if (out.length) throw new ConfigError(`table ${out.join(', ')} is excluded from capture (config sources[].exclude); take it out of exclude first, then run this again`);
  }
}

/** The replicas a join goes to: those named (each must take the tables), or every replica whose configured tables include them. */
function targetReplicas(config: Config, tables: TableRef[], named: string[] | undefined): string[] {
  if (named?.length) {
    for (const name of named) {
      replicaUrl(config, name); // a clear error for a replica that is not configured
      const left = tables.filter((t) => !replicaShare(config, name, [t]).length).map((t) => relLabel(t));
      if (left.length) throw new ConfigError(`replica '${name}': table ${left.join(', ')} is not in its tables (config replicas[].tables); add it there first, then run this again`);
    }
    return named;
  }
  const all = config.replicas.filter((r) => replicaShare(config, r.name, tables).length > 0).map((r) => r.name);
  if (!all.length) throw new ConfigError(`no configured replica takes ${tables.map((t) => relLabel(t)).join(', ')}: configure a replica (--replica name=postgres://…) or add the table to its tables`);
  return all;
}

async function joinReplica(a: {
  config: Config;
  name: string;
  rabbit: ChannelModel;
  tables: TableRef[];
  share: TableRef[];
  schemaChangesCaptured: boolean;
  named: boolean;
  o: JoinOptions;
}): Promise<JoinResult | null> {
  const { config, name, tables, o } = a;
  const url = replicaUrl(config, name);
  const label = `replica '${name}'`;
  // One session for the whole join: it holds the replica's table lock throughout.
  return withClient(label, url, async (c) => {
    await ensureTargetSchema(c);
    await lockReplicaTables(c, name, 'this join');
    await checkNoUnfinishedCopy(c, name);
    const registry = new Map((await TableRegistry.list(c, name)).map((r) => [tableKey(r.schema, r.table), r.state]));
    const already = tables.filter((t) => registry.get(tableKey(t.schema, t.table)) === 'ready').map((t) => relLabel(t));
    if (already.length && !o.replace) {
      // A join run again after it finished on some replicas goes on with the others.
      if (already.length === tables.length && !a.named) {
        o.say(`${label} already takes ${already.join(', ')}; skipped (pass --replace to copy it again)`);
        return null;
      }
      throw new ConfigError(`${label} already takes table ${already.join(', ')}; to copy it again from a fresh snapshot pass --replace`);
    }
    // What an earlier attempt kept: its schema changes shape the replica's tables before anything is checked or copied.
    let now = await takeKeptShape(c, a, tables);
    const created = await prepareJoin(c, { ...a, tables: now }, registry);
    let copied: Awaited<ReturnType<typeof copyFromSnapshot>>;
    let swapped: { replayed: number; names: string[] };
    for (let attempt = 1; ; attempt++) {
      copied = await copyFromSnapshot({
        config,
        replica: name,
        rabbit: a.rabbit,
        tables: now,
        parallel: o.parallel,
        target: (t) => shadowOf(t, JOIN_SCHEMA),
        say: o.say,
        onProgress: (p) => o.onProgress?.(name, p),
      });
      o.say(`${label}: swapping in the copy and what changed during it (one transaction)`);
      const tried = await swapIn(c, config, name, now, copied.position).catch((err) => {
        if (err instanceof Error) {
          err.message = `${label}: the join of ${now.map((t) => relLabel(t)).join(', ')} stopped at its swap (nothing of it was applied, its changes stay kept): ${err.message.replace(/; [^;]*pgferry replica resume \S+$/, '')}; fix that, then run pgferry table add again`;
        }
        throw err;
      });
      if (tried !== 'reshaped') {
        swapped = tried;
        break;
      }
      if (attempt >= MAX_COPIES) {
        throw new SchemaMismatchError(
          `${label}: the source changed the shape of ${now.map((t) => relLabel(t)).join(', ')} before each of ${MAX_COPIES} snapshots of the join was taken; ` +
            `what changed is taken, nothing else was applied: run pgferry table add again once the table's schema changes have stopped`,
        );
      }
      o.say(`${label}: the source changed the shape of a joining table before the snapshot at ${copied.position}; the replica's table takes it, and the copy is made again`);
      now = await takeKeptShape(c, a, now);
      await makeShadows(c, now);
    }
    for (const t of now) {
      const s = shadowOf(t, JOIN_SCHEMA);
      await c.query(`DROP TABLE IF EXISTS ${qualified(s.schema, s.table)}`);
    }
    // Gone once no other join's copy waits in it.
    await c.query(`DROP SCHEMA IF EXISTS ${ident(JOIN_SCHEMA)}`).catch(() => undefined);
    return {
      replica: name,
      tables: swapped.names,
      position: copied.position,
      rows: copied.tables.reduce((n, t) => n + t.rows, 0),
      replayed: swapped.replayed,
      created,
    };
  });
}

/** Steps 1–2 on the replica: the tables there (or created), checked, empty unless replaced, registered `copying`, shadows made. */
async function prepareJoin(
  c: pg.ClientBase,
  a: { config: Config; name: string; tables: TableRef[]; share: TableRef[]; schemaChangesCaptured: boolean; o: JoinOptions },
  registry: Map<string, string>,
): Promise<string[]> {
  const { config, name, tables, o } = a;
  const source = config.source.name;
  const label = `replica '${name}'`;
  let created: string[] = [];
  if (o.createTables) {
    created = await withClient(`source '${source}'`, requireSourceUrl(config), (s) => createMissingTables(s, c, name, tables));
    if (created.length) o.say(`${label}: created ${created.join(', ')}`);
  }
  const absent = (await missingTables(c, tables)).map((t) => relLabel(t));
  if (absent.length) {
    throw new SchemaMismatchError(
      `${label}: table ${absent.join(', ')} does not exist on the replica; pass --create-tables to create it from the source's definition, or create it there yourself, then run this again`,
    );
  }
  for (const warning of await prepareTarget(c, name, a.share, { joining: tables, schemaChangesCaptured: a.schemaChangesCaptured })) o.say(`WARNING ${warning}`);
  if (!o.replace) {
    const busy: string[] = [];
    for (const t of tables) {
      if (registry.get(tableKey(t.schema, t.table)) === 'copying') continue; // an earlier join's attempt: its rows are replaced anyway
      if ((await c.query(`SELECT EXISTS (SELECT 1 FROM ${qualified(t.schema, t.table)}) AS e`)).rows[0].e === 't') busy.push(relLabel(t));
    }
    if (busy.length) {
      throw new SchemaMismatchError(
        `${label}: table ${busy.join(', ')} already holds rows; a join copies into an empty table: empty it (TRUNCATE), or pass --replace to replace its rows with the source's`,
      );
    }
  }
  // Step 2, at a batch boundary.
  await inTransaction(c, async () => {
    await ProgressStore.lock(c, name, source);
    await TableRegistry.set(c, name, tables, 'copying', ZERO_LSN);
  });
  o.say(`${label}: ${tables.map((t) => relLabel(t)).join(', ')} joining; changes to ${tables.length > 1 ? 'them' : 'it'} are kept until the copy is in place`);
  await makeShadows(c, tables);
  return created;
}

/** The empty tables the copy goes into, shaped as the replica's tables are now. */
async function makeShadows(c: pg.ClientBase, tables: TableRef[]): Promise<void> {
  await c.query(`CREATE SCHEMA IF NOT EXISTS ${ident(JOIN_SCHEMA)}`);
  for (const t of tables) {
    const s = shadowOf(t, JOIN_SCHEMA);
    await c.query(`DROP TABLE IF EXISTS ${qualified(s.schema, s.table)}`);
    await c.query(`CREATE UNLOGGED TABLE ${qualified(s.schema, s.table)} (LIKE ${qualified(t.schema, t.table)} INCLUDING GENERATED)`);
  }
}

/** Copies a join makes when the source keeps changing a joining table's shape before each snapshot. */
const MAX_COPIES = 3;

const nameKey = (t: { schema: string; table: string }) => tableKey(t.schema, t.table);
const fromKey = (k: string) => {
  const [schema, table] = JSON.parse(k) as [string, string];
  return { schema, table };
};

/**
 * What is kept for the joining tables, in the order the replica passed it:
 * under every name the tables had or took through a kept RENAME (a re-run
 * names the table as the source does now, an earlier attempt kept changes
 * under its old name).
 */
async function keptFor(c: pg.ClientBase, replica: string, tables: { schema: string; table: string }[]): Promise<{ names: { schema: string; table: string }[]; messages: TxnMessage[] }> {
  const all = await TableRegistry.allPending(c, replica);
  const renames: [string, string][] = [];
  for (const p of all) for (const ch of p.m.changes) if (ch.op === 'schema' && ch.before && ch.after) renames.push([nameKey(ch.before), nameKey(ch.after)]);
  const names = new Set(tables.map(nameKey));
  for (let grew = true; grew; ) {
    grew = false;
    for (const [a, b] of renames) {
      if (names.has(a) === names.has(b)) continue;
      names.add(names.has(a) ? b : a);
      grew = true;
    }
  }
  return { names: [...names].map(fromKey), messages: all.filter((p) => names.has(nameKey(p))).map((p) => p.m) };
}

/** A joining table as a kept schema change leaves it: its name and columns after it (those the source sends: not generated ones). */
function reshaped(tables: TableRef[], ch: SchemaChange): TableRef[] {
  if (!ch.after) return tables;
  const names = [ch.before, ch.after].filter((x): x is NonNullable<typeof x> => x !== null).map(nameKey);
  return tables.map((t) =>
    names.includes(nameKey(t)) ? { ...t, schema: ch.after!.schema, table: ch.after!.table, columns: ch.after!.columns.filter((col) => !col.generated).map((col) => ({ name: col.name, type: col.type })) } : t,
  );
}

/**
 * Before a copy: the replica's joining tables take every schema change kept
 * for them (by an earlier attempt, or before the last snapshot), as
 * streaming applies one; what was kept is then dropped, since a snapshot
 * taken from now on holds all of it. Returns the tables as named and shaped
 * now. One replica transaction, with the checkpoint locked.
 */
async function takeKeptShape(c: pg.ClientBase, a: { config: Config; name: string }, tables: TableRef[]): Promise<TableRef[]> {
  const { config, name } = a;
  const log = logger.child({ replica: name });
  const work = inTransaction(c, async () => {
    await ProgressStore.lock(c, name, config.source.name);
    const kept = await keptFor(c, name, tables);
    let now = tables;
    for (const m of kept.messages) {
      for (const ch of m.changes) {
        if (ch.op !== 'schema') continue;
        await applySchemaChange(c, { replica: name, policy: replicaSchemaPolicy(config, name), log }, m, ch);
        now = reshaped(now, ch);
      }
    }
    await TableRegistry.clearPending(c, name, kept.names);
    return now;
  });
  return work.catch((err) => {
    // A change the replica's policy or its table refuses: fixed by hand, then the join is run again (it is not a replica to resume).
    if (err instanceof SchemaMismatchError) err.message = `${err.message.replace(`, then run pgferry replica resume ${name}`, '')}; then run pgferry table add again`;
    throw err;
  });
}

/**
 * Step 4, one replica transaction with the checkpoint locked, in replica
 * role as apply runs (the replica's own triggers and foreign-key actions do
 * not fire on rows the source already had): the copy replaces the tables'
 * rows (parents first), what was kept after the snapshot is applied in the
 * order the replica passed it — a schema change as streaming applies one,
 * a RENAME moving the table and its registry entry — and the tables are
 * `ready` from the snapshot. Returns how many kept chunks were applied and
 * the tables' names after them; `reshaped` (nothing done) when a schema
 * change of theirs at or before the snapshot was kept: the copy was made
 * with the columns known before it, and is made again.
 */
async function swapIn(c: pg.ClientBase, config: Config, name: string, tables: TableRef[], position: string): Promise<{ replayed: number; names: string[] } | 'reshaped'> {
  if (!(await useReplicaRole(c))) logger.warn({ replica: name }, await replicaRoleAdvice(c, name));
  return inTransaction(c, async () => {
    await ProgressStore.lock(c, name, config.source.name);
    const kept = await keptFor(c, name, tables);
    if (kept.messages.some((m) => compareLsn(m.lsn, position) <= 0 && m.changes.some((ch) => ch.op === 'schema'))) return 'reshaped';
    const after = kept.messages.filter((m) => compareLsn(m.lsn, position) > 0);
    // Where the registry has each table now: under the name a kept RENAME gave it.
    let current: TableRef[] = tables;
    for (const m of after) for (const ch of m.changes) if (ch.op === 'schema' && ch.before) current = reshaped(current, ch);
    const states = new Map((await TableRegistry.list(c, name)).map((r) => [tableKey(r.schema, r.table), r.state]));
    const gone = current.filter((t) => states.get(tableKey(t.schema, t.table)) !== 'copying').map((t) => relLabel(t));
    if (gone.length) throw new ConfigError(`table ${gone.join(', ')} is no longer joining (removed or rebuilt meanwhile)`);
    // The copy is the tables as they were named at the snapshot: their entries go back there, and the kept RENAME moves them again below.
    for (let i = 0; i < tables.length; i++) if (nameKey(current[i]) !== nameKey(tables[i])) await TableRegistry.rename(c, name, current[i], tables[i]);
    for (const t of await parentsFirst(c, tables)) {
      await c.query(`DELETE FROM ${qualified(t.schema, t.table)}`);
      await c.query(fillFromShadowSql(t, shadowOf(t, JOIN_SCHEMA)));
    }
    await TableRegistry.set(c, name, tables, 'ready', position);
    const applier = new Applier(c, name, logger.child({ replica: name }), await TableRegistry.gate(c, name, replicaTables(config, name), false), false, replicaSchemaPolicy(config, name), windowFor(config.batch.maxChanges));
    for (const m of after) await applier.apply(m);
    await applier.flush();
    await TableRegistry.clearPending(c, name, kept.names);
    return { replayed: after.length, names: current.map((t) => relLabel(t)) };
  });
}

export interface RemoveResult {
  replica: string;
  tables: string[];
  /** The replica's position when the tables left: every change up to it was applied. */
  position: string;
}

/** `pgferry table remove`: stop applying the tables on the replicas (named, or every one that takes them); their rows stay. */
export async function removeTables(config: Config, specs: string[], o: { replicas?: string[]; say: (line: string) => void }): Promise<RemoveResult[]> {
  const names = specs.map(parseTableName);
  const replicas = o.replicas?.length ? o.replicas : config.replicas.map((r) => r.name);
  const results: RemoveResult[] = [];
  for (const name of replicas) {
    const label = `replica '${name}'`;
    const r = await withClient(label, replicaUrl(config, name), async (c) => {
      await lockReplicaTables(c, name, 'table remove');
      const registered = await TableRegistry.list(c, name);
      if (!registered.length) throw new ConfigError(`${label} has not registered the tables it takes yet: run pgferry init (or up) once with this configuration, then run this again`);
      const taken = new Map(registered.filter((t) => t.state !== 'removed').map((t) => [tableKey(t.schema, t.table), t]));
      const tables = names.filter((t) => taken.has(tableKey(t.schema, t.table)));
      const missing = names.filter((t) => !taken.has(tableKey(t.schema, t.table)));
      if (missing.length && o.replicas?.length) {
        throw new ConfigError(`${label} does not take table ${missing.map((t) => relLabel(t)).join(', ')} (see pgferry table list); nothing was removed from it`);
      }
      if (!tables.length) return null;
      return inTransaction(c, async () => {
        const at = await ProgressStore.lock(c, name, config.source.name);
        await TableRegistry.set(c, name, tables, 'removed', at.lsn);
        await TableRegistry.clearPending(c, name, tables);
        return { replica: name, tables: tables.map((t) => relLabel(t)), position: at.lsn };
      });
    });
    if (r) results.push(r);
  }
  if (!results.length) throw new ConfigError(`no replica takes table ${names.map((t) => relLabel(t)).join(', ')} (see pgferry table list); nothing was removed`);
  return results;
}

async function inTransaction<T>(c: pg.ClientBase, work: () => Promise<T>): Promise<T> {
  await c.query('BEGIN');
  try {
    const out = await work();
    await c.query('COMMIT');
    return out;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}
