SELECT slot_name, plugin, active, active_pid, confirmed_flush_lsn::text AS confirmed_flush_lsn,
       restart_lsn::text AS restart_lsn, wal_status,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes
FROM pg_catalog.pg_replication_slots WHERE slot_name = $1
