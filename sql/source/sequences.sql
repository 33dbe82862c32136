-- Every user sequence with its current value (NULL: never used).
SELECT schemaname AS schema_name, sequencename AS sequence_name, last_value::text AS last_value
FROM pg_catalog.pg_sequences
WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'pgferry')
ORDER BY 1, 2
