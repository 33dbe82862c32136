/**
 * A consistent snapshot of a WAL-captured source whose position in the
 * change log is known: a temporary logical replication slot created with an
 * exported snapshot. Every transaction that committed at or before the
 * slot's consistent point is in the snapshot, every later one is not.
 */
import pg from 'pg';
import { randomBytes } from 'node:crypto';
import { SourceError } from '../../errors';
import { connectPg } from '../../pg';
import { slotName } from '../../names';
import type { ExportedSnapshot, SourcePoint } from '../contract';

export async function exportWalSnapshot(url: string, source: string): Promise<ExportedSnapshot> {
  const what = `source '${source}'`;
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
 * Capture acknowledges the slot only up to transactions RabbitMQ confirmed
 * (and, with nothing in flight, to the server's keepalive position): a
 * confirmed position at or past the point means every transaction committed
 * before it is in the stream.
 */
export async function walCapturedThrough(c: pg.ClientBase, source: string, point: SourcePoint): Promise<boolean> {
  const { rows } = await c.query<{ yes: boolean | string | null }>(
    'SELECT confirmed_flush_lsn >= $2::pg_lsn AS yes FROM pg_catalog.pg_replication_slots WHERE slot_name = $1',
    [slotName(source), point.lsn],
  );
  return rows[0]?.yes === true || rows[0]?.yes === 't';
}

/** The WAL insert position and the snapshot now: a replica at that position holds everything the snapshot shows. */
export async function walPoint(c: pg.ClientBase): Promise<SourcePoint> {
  return (await c.query(`SELECT pg_catalog.pg_current_snapshot()::text AS snap, pg_catalog.pg_current_wal_lsn()::text AS lsn`)).rows[0];
}
