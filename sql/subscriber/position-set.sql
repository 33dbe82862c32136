-- Move a subscriber forward, only from where this process last left it: if
-- another process moved it (the same subscriber running twice), no row is
-- updated and the caller stops instead of delivering twice.
UPDATE %TABLE%
SET lsn = $3::pg_lsn, stream_offset = $4, txns = txns + $5, changes = changes + $6, updated_at = now()
WHERE subscriber = $1 AND lsn = $2::pg_lsn
