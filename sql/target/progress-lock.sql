-- Lock this replica's progress row for the length of the apply transaction.
-- A second worker applying the same replica waits here, then sees the new
-- position: two workers can never apply the same source transaction twice.
-- (The row is created by progress-init.sql.)
SELECT lsn::text AS lsn, stream_offset::text AS stream_offset, history, source
FROM pgferry.progress WHERE replica = $1 FOR UPDATE
