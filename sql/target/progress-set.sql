-- Set where a replica continues (rewind, resync): it holds every source
-- transaction up to $3 of source history $5 (null: taken from the log), and
-- reads the stream after offset $4. Counters are kept.
INSERT INTO pgferry.progress (replica, source, lsn, stream_offset, history)
VALUES ($1, $2, $3::pg_lsn, $4::bigint, $5::text)
ON CONFLICT (replica) DO UPDATE
SET source = EXCLUDED.source, lsn = EXCLUDED.lsn, stream_offset = EXCLUDED.stream_offset, history = EXCLUDED.history, updated_at = now()
