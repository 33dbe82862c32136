-- A batch is confirmed by RabbitMQ: forget its events and the ticks before
-- it, and record how far capture got — one transaction.
WITH gone AS (
  DELETE FROM pgferry.events e USING pgferry.ticks prev, pgferry.ticks next
  WHERE prev.tick_id = $2 AND next.tick_id = $3
    AND pg_catalog.pg_visible_in_snapshot(e.txid, next.snap) AND NOT pg_catalog.pg_visible_in_snapshot(e.txid, prev.snap)
  RETURNING 1
), state AS (
  UPDATE pgferry.capture_state SET last_tick = $3 WHERE source = $1 RETURNING 1
)
SELECT (SELECT count(*) FROM gone)::int AS deleted, (SELECT count(*) FROM state)::int AS updated
