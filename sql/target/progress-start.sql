-- A replica filled from a snapshot: it holds every source transaction up to
-- the snapshot's position (of source history $5; null: taken from the log),
-- and reads the stream from the given offset (the newest message when the
-- snapshot was taken; NULL: from the beginning).
INSERT INTO pgferry.progress (replica, source, lsn, stream_offset, history)
VALUES ($1, $2, $3::pg_lsn, $4::bigint, $5::text)
