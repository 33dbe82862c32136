UPDATE pgferry.progress
SET lsn = $2::pg_lsn,
    stream_offset = $3::bigint,
    txns_applied = txns_applied + $4::bigint,
    changes_applied = changes_applied + $5::bigint,
    last_commit_time = COALESCE($6::timestamptz, last_commit_time),
    history = COALESCE($7::text, history),
    updated_at = now()
WHERE replica = $1
