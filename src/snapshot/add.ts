/**
 * `pgferry replica add <name> --snapshot`: fill a new replica with the
 * source's current content, then leave it where the stream takes over.
 *
 * 1. the newest stream offset is noted: every message up to it holds a
 *    transaction that committed before the snapshot below;
 * 2. a snapshot with a known position is exported (temporary slot);
 * 3. the tables are copied from it, several at a time;
 * 4. the replica's progress row records the snapshot position and that
 *    offset, so its workflow reads the stream from there and skips every
 *    transaction at or below the position: writes made during the copy are
 *    applied exactly once.
 */
import type { Config } from '../config';
import { replicaShare, replicaUrl, requireSourceUrl } from '../config';
import { relLabel } from '../change';
import { ConfigError, SchemaMismatchError } from '../errors';
import { logger } from '../logger';
import { connectRabbit } from '../changelog/rabbit';
import { retainedRange } from '../changelog/stream';
import type { TableRef } from '../tables';
import { prepareCapture } from '../capture/prepare';
import type { ChannelModel } from 'amqplib';
import { prepareTarget } from '../apply/target';
import { qualified, withClient } from '../pg';
import { withRetry } from '../retry';
import { copyTables, TableProgress } from './copy';
import { createMissingTables } from './create-tables';
import { captureMode, refuseOtherMode } from '../capture/mode';
import { ProgressStore } from '../apply/progress-store';
import { TableRegistry } from '../apply/table-registry';
import { ZERO_LSN } from '../lsn';

export interface AddOptions {
  createTables: boolean;
  parallel: number;
  say: (line: string) => void;
  onProgress?: (tables: TableProgress[]) => void;
}

export interface AddResult {
  position: string;
  offset: number | null;
  /** The identity of the stream `offset` is in (null: it has none yet). */
  stream?: string | null;
  tables: TableProgress[];
  /** Tables `--create-tables` created, and what the checks warned about. */
  created?: string[];
  warnings?: string[];
  /** What resync changed in the tables' shapes ("public.t created", "public.u: column a added"). */
  reshaped?: string[];
}

export async function addReplica(config: Config, name: string, o: AddOptions): Promise<AddResult> {
  const sourceUrl = requireSourceUrl(config);
  const targetUrl = replicaUrl(config, name);
  const source = config.source.name;
  const wait = config.connectWaitMs;

  const rabbit = await withRetry(() => connectRabbit(config.rabbitmqUrl), wait, logger);
  try {
    const prepared = await prepareCapture(config, rabbit);
    const tables = replicaShare(config, name, prepared.tables);
    const warnings = [...prepared.warnings];
    let created: string[] = [];

    // The replica: tables present (or created), matching, empty, and not already replicating.
    await withClient(`replica '${name}'`, targetUrl, async (c) => {
      if (o.createTables) {
        created = await withClient(`source '${source}'`, sourceUrl, (s) => createMissingTables(s, c, name, tables));
        if (created.length) o.say(`replica '${name}': created ${created.join(', ')}`);
      }
      warnings.push(...(await prepareTarget(c, name, tables, { joining: tables })));
      for (const warning of warnings) o.say(`WARNING ${warning}`);
      const existing = await ProgressStore.get(c, name);
      // A row init/up made for a replica that never applied anything is no replication yet.
      if (existing && !(existing.offset === null && existing.lsn === ZERO_LSN)) {
        throw new ConfigError(
          `replica '${name}' already replicates source '${existing.source}' (applied up to ${existing.lsn}); to rebuild it from a fresh snapshot run pgferry replica resync ${name}`,
        );
      }
      // A retried copy empties only what an earlier attempt of its own claimed (after finding it empty).
      const claimed = (await c.query('SELECT 1 FROM pgferry.snapshot_claims WHERE replica = $1', [name])).rows.length > 0;
      if (claimed) await c.query(`TRUNCATE ${tables.map((t) => qualified(t.schema, t.table)).join(', ')}`);
      const busy: string[] = [];
      for (const t of tables) {
        if ((await c.query(`SELECT EXISTS (SELECT 1 FROM ${qualified(t.schema, t.table)}) AS e`)).rows[0].e === 't') busy.push(relLabel(t));
      }
      if (busy.length) {
        throw new SchemaMismatchError(
          `replica '${name}': table ${busy.join(', ')} already holds rows; a snapshot fills empty tables only: empty ${busy.length > 1 ? 'them' : 'it'} (TRUNCATE), or run pgferry replica resync ${name} to replace the content`,
        );
      }
      await c.query('INSERT INTO pgferry.snapshot_claims (replica) VALUES ($1) ON CONFLICT DO NOTHING', [name]);
    });

    const copied = await copyFromSnapshot({ config, replica: name, rabbit, tables, parallel: o.parallel, say: o.say, onProgress: o.onProgress });
    await withClient(`replica '${name}'`, targetUrl, async (c) => {
      await c.query('BEGIN');
      await ProgressStore.start(c, name, source, { lsn: copied.position, offset: copied.offset, stream: copied.stream });
      await TableRegistry.reset(c, name, tables);
      await c.query('DELETE FROM pgferry.snapshot_claims WHERE replica = $1', [name]);
      await c.query('COMMIT');
    });
    return { ...copied, created, warnings };
  } finally {
    await rabbit.close().catch(() => undefined);
  }
}

/**
 * Steps 1–3 above: note the stream's newest offset, export a snapshot, copy
 * the tables from it (into `target` tables if given). Returns the position
 * and offset the replica continues from once the copy is in place.
 */
export async function copyFromSnapshot(o: {
  config: Config;
  replica: string;
  rabbit: ChannelModel;
  tables: TableRef[];
  parallel: number;
  target?: (t: TableRef) => TableRef;
  say: (line: string) => void;
  onProgress?: (tables: TableProgress[]) => void;
}): Promise<AddResult> {
  const source = o.config.source.name;
  const sourceUrl = requireSourceUrl(o.config);
  // 1. then 2.: the order matters (see above).
  const mode = captureMode(o.config);
  await withClient(`source '${source}'`, sourceUrl, (c) => refuseOtherMode(c, source, mode));
  const newest = (await retainedRange(o.rabbit, source)).last;
  const offset = newest?.offset ?? null;
  const snapshot = await mode.exportSnapshot(sourceUrl, source);
  try {
    o.say(`snapshot of source '${source}' at ${snapshot.position}: copying ${o.tables.length} table(s), ${o.parallel} at a time`);
    const tables = await copyTables({
      sourceUrl,
      replicaUrl: replicaUrl(o.config, o.replica),
      source,
      replica: o.replica,
      snapshot: snapshot.name,
      tables: o.tables,
      target: o.target,
      parallel: o.parallel,
      onProgress: o.onProgress,
    });
    return { position: snapshot.position, offset, stream: newest?.stream ?? null, tables };
  } finally {
    await snapshot.close();
  }
}

