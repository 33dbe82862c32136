-- The transactions of one batch: those visible in tick $2's snapshot and not
-- in tick $1's, in commit order as far as it matters — by their last event:
-- of two transactions writing the same row, the later writer waited for the
-- earlier one to commit, so its last event comes after all of the earlier's.
SELECT e.txid::text AS txid, max(e.ev_id)::text AS last_ev, count(*)::int AS events,
       to_char(max(e.at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS commit_time
FROM pgferry.events e, pgferry.ticks prev, pgferry.ticks next
WHERE prev.tick_id = $1 AND next.tick_id = $2
  AND pg_catalog.pg_visible_in_snapshot(e.txid, next.snap) AND NOT pg_catalog.pg_visible_in_snapshot(e.txid, prev.snap)
GROUP BY e.txid
ORDER BY max(e.ev_id)
