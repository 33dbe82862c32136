-- A replica filled from a snapshot: it holds every source transaction up to
-- the snapshot's position (of source history $5; null: taken from the log),
-- and reads the stream from the given offset (the newest message when the
-- snapshot was taken; NULL: from the beginning). A row that never applied
-- anything (made by init/up) is taken over.
INSERT INTO pgferry.progress (replica, source, lsn, stream_offset, history)
VALUES ($1, $2, $3::pg_lsn, $4::bigint, $5::text)
ON CONFLICT (replica) DO UPDATE
SET source = EXCLUDED.source, lsn = EXCLUDED.lsn, stream_offset = EXCLUDED.stream_offset, history = EXCLUDED.history, updated_at = now()
WHERE pgferry.progress.stream_offset IS NULL AND pgferry.progress.lsn = '0/0' AND pgferry.progress.txns_applied = 0
