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

/**
 * Health of the replication slot $1: where it stands and how much WAL it keeps on the source.
 * One row even when the slot does not exist (the server's current position is still known).
 */
const SLOT_HEALTH = `
SELECT s.slot_name IS NOT NULL AS slot_exists,
       s.active,
       s.restart_lsn::text AS restart_lsn,
       s.confirmed_flush_lsn::text AS confirmed_flush_lsn,
       s.wal_status,
       w.lsn::text AS current_lsn
FROM (SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()
                  ELSE pg_catalog.pg_current_wal_lsn() END AS lsn) w
LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = $1`;

interface SlotHealthRow {
  slot_exists: boolean | string;
  /** Null (like the slot's other columns) when the slot does not exist. */
  active: boolean | string | null;
  restart_lsn: string | null;
  confirmed_flush_lsn: string | null;
  wal_status: string | null;
  current_lsn: string;
}

export async function slotHealth(url: string, source: string): Promise<SlotHealth> {
  const slot = slotName(source);
  return withClient(`source '${source}'`, url, async (c) => {
    const r = (await c.query<SlotHealthRow>(SLOT_HEALTH, [slot])).rows[0];
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
