SELECT source, lsn::text AS lsn, stream_offset::text AS stream_offset, txns::text AS txns, changes::text AS changes
FROM %TABLE%
WHERE subscriber = $1
