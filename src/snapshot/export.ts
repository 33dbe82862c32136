import pg from 'pg';
import { randomBytes } from 'node:crypto';
import { SourceError } from '../errors';
import { connectPg } from '../pg';
import { formatLsn } from '../lsn';
import { TICK_LOCK } from '../capture/trigger-source';

/**
 * A consistent snapshot of the source whose position in the change log is
 * known. WAL mode: a temporary logical replication slot created with an
 * exported snapshot. Trigger mode: see exportTriggerSnapshot.
 * Every transaction that committed at or before `position` is in the
 * snapshot, every later one is not — so a copy taken with it, followed by
 * the stream's transactions above `position`, is the source exactly once.
 * The snapshot lives as long as this connection stays open and idle.
 */
export interface ExportedSnapshot {
  /** The slot's consistent point (WAL mode), or <tick>/FFFFFFFF (trigger mode). */
  position: string;
  /** For SET TRANSACTION SNAPSHOT in the copying sessions. */
  name: string;
  close(): Promise<void>;
}

export async function exportSnapshot(url: string, source: string, mode: 'wal' | 'trigger' = 'wal'): Promise<ExportedSnapshot> {
  const what = `source '${source}'`;
  if (mode === 'trigger') return exportTriggerSnapshot(url, source);
  const c = await connectPg(what, url, { replication: 'database' } as Partial<pg.ClientConfig>);
  const slot = `pgferry_snap_${randomBytes(6).toString('hex')}`;
  try {
    // TEMPORARY: dropped by the server when this connection ends, whatever happens to this process.
    const { rows } = await c.query(`CREATE_REPLICATION_SLOT ${slot} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')`);
    return {
      position: rows[0].consistent_point,
      name: rows[0].snapshot_name,
      close: () => c.end().catch(() => undefined),
    };
  } catch (err) {
    await c.end().catch(() => undefined);
    const e = err as { code?: string; message?: string };
    throw new SourceError(
      `${what}: cannot export a snapshot (${e.message}); the role needs REPLICATION and a free replication slot (max_replication_slots)`,
      { cause: err },
    );
  }
}

/**
 * Trigger mode has no slot to give a position, so the snapshot is made a
 * batch boundary: with tick creation held off (the advisory lock capture
 * takes for each tick), the copy's transaction takes its snapshot S, and S
 * is recorded as the next tick. Every transaction visible in S then lies in
 * a batch up to that tick — positions up to <tick>/FFFFFFFF — and every
 * other one in a later batch.
 */
async function exportTriggerSnapshot(url: string, source: string): Promise<ExportedSnapshot> {
  const what = `source '${source}'`;
  const lock = await connectPg(what, url);
  const copy = await connectPg(what, url);
  const close = async () => {
    await copy.end().catch(() => undefined);
    await lock.end().catch(() => undefined);
  };
  try {
    await lock.query(`SELECT pg_catalog.pg_advisory_lock(${TICK_LOCK})`);
    await copy.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const s = (await copy.query('SELECT pg_catalog.pg_current_snapshot()::text AS snap, pg_catalog.pg_export_snapshot() AS name')).rows[0];
    const tick = (await lock.query('INSERT INTO pgferry.ticks (snap) VALUES ($1::pg_snapshot) RETURNING tick_id::text', [s.snap])).rows[0].tick_id;
    await lock.query(`SELECT pg_catalog.pg_advisory_unlock(${TICK_LOCK})`);
    return { position: formatLsn((BigInt(tick) << 32n) | 0xffffffffn), name: s.name, close };
  } catch (err) {
    await close();
    const e = err as { message?: string };
    throw new SourceError(`${what}: cannot take a snapshot for trigger capture (${e.message}); is trigger capture installed (pgferry init --mode trigger)?`, { cause: err });
  }
}
