-- Move a sequence up to at least $2 (never down); returns the value it now has.
-- $1 is the sequence's quoted, qualified name.
SELECT pg_catalog.setval($1::regclass, greatest($2::bigint, coalesce(s.last_value, $2::bigint)), true)::text AS value
FROM pg_catalog.pg_sequences s
WHERE s.schemaname = $3 AND s.sequencename = $4
