/**
 * How a source's replication slot stands: whether it exists and is in use,
 * how far it has been confirmed, and how much WAL it makes the source keep
 * (`retainedBytes`: from the slot's restart_lsn to the server's current
 * position). For `capture status` and metrics; one short query on an
 * ordinary connection.
 */
import { lsnDistance, normalizeLsn } from '../../lsn';
import { slotName } from '../../names';
import { withClient } from '../../pg';
import { loadSql } from '../../sql';

export interface SlotHealth {
  slot: string;
  exists: boolean;
  /** A walsender is streaming from the slot (null when the slot does not exist). */
  active: boolean | null;
  restartLsn: string | null;
  confirmedLsn: string | null;
  /** The server's current WAL position (its replay position on a standby). */
  currentLsn: string;
  /** pg_current_wal_lsn() - restart_lsn: WAL the slot keeps on disk (null without a slot, or an invalidated one). */
  retainedBytes: number | null;
  /** pg_replication_slots.wal_status: reserved, extended, unreserved or lost. */
  walStatus: string | null;
}

export async function slotHealth(url: string, source: string): Promise<SlotHealth> {
  const slot = slotName(source);
  return withClient(`source '${source}'`, url, async (c) => {
    const r = (await c.query(loadSql('source/slot-health.sql'), [slot])).rows[0];
    const bool = (v: unknown) => (v === null || v === undefined ? null : v === true || v === 't');
    const lsn = (v: unknown) => (typeof v === 'string' && v ? normalizeLsn(v) : null);
    const currentLsn = normalizeLsn(r.current_lsn);
    const restartLsn = lsn(r.restart_lsn);
    return {
      slot,
      exists: bool(r.slot_exists) === true,
      active: bool(r.active),
      restartLsn,
      confirmedLsn: lsn(r.confirmed_flush_lsn),
      currentLsn,
      retainedBytes: restartLsn ? lsnDistance(restartLsn, currentLsn) : null,
      walStatus: r.wal_status ?? null,
    };
  });
}
