import pg from 'pg';
import { randomBytes } from 'node:crypto';
import { SourceError } from '../errors';
import { connectPg } from '../pg';

/**
 * A consistent snapshot of the source whose position in the WAL is known:
 * a temporary logical replication slot created with an exported snapshot.
 * Every transaction that committed at or before `position` is in the
 * snapshot, every later one is not — so a copy taken with it, followed by
 * the stream's transactions above `position`, is the source exactly once.
 * The snapshot lives as long as this connection stays open and idle.
 */
export interface ExportedSnapshot {
  /** The slot's consistent point. */
  position: string;
  /** For SET TRANSACTION SNAPSHOT in the copying sessions. */
  name: string;
  close(): Promise<void>;
}

export async function exportSnapshot(url: string, source: string, mode: 'wal' | 'trigger' = 'wal'): Promise<ExportedSnapshot> {
  const what = `source '${source}'`;
  if (mode === 'trigger') {
    throw new SourceError(`${what}: snapshots of a trigger-mode source are not built yet; fill the replica with pg_dump taken before pgferry init --mode trigger, or use WAL mode`);
  }
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
