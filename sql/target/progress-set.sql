-- Set where a replica continues (rewind, resync): it holds every source
-- transaction up to $3, and reads the stream after offset $4. Counters are kept.
INSERT INTO pgferry.progress (replica, source, lsn, stream_offset)
VALUES ($1, $2, $3::pg_lsn, $4::bigint)
ON CONFLICT (replica) DO UPDATE
SET source = EXCLUDED.source, lsn = EXCLUDED.lsn, stream_offset = EXCLUDED.stream_offset, updated_at = now()
