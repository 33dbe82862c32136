-- A new subscriber's starting point (from: 'now' | 'beginning' | position); an existing one keeps its own.
INSERT INTO %TABLE% (subscriber, source, lsn, stream_offset) VALUES ($1, $2, $3::pg_lsn, $4)
ON CONFLICT (subscriber) DO NOTHING
