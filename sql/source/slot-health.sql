-- Health of the replication slot $1: where it stands and how much WAL it keeps on the source.
-- One row even when the slot does not exist (the server's current position is still known).
SELECT s.slot_name IS NOT NULL AS slot_exists,
       s.active,
       s.restart_lsn::text AS restart_lsn,
       s.confirmed_flush_lsn::text AS confirmed_flush_lsn,
       s.wal_status,
       w.lsn::text AS current_lsn
FROM (SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()
                  ELSE pg_catalog.pg_current_wal_lsn() END AS lsn) w
LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = $1
