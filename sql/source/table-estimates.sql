-- Estimated rows and bytes of the given tables (a partitioned table: the sum
-- of its partitions), from the planner's statistics: for progress and ETA only.
SELECT w.ord,
       coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint AS est_rows,
       coalesce(sum(pg_catalog.pg_table_size(c.oid)), 0)::bigint AS est_bytes
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(schema_name, table_name, ord)
JOIN pg_catalog.pg_namespace n ON n.nspname = w.schema_name
JOIN pg_catalog.pg_class r ON r.relnamespace = n.oid AND r.relname = w.table_name
CROSS JOIN LATERAL pg_catalog.pg_partition_tree(r.oid) pt
JOIN pg_catalog.pg_class c ON c.oid = pt.relid AND pt.isleaf
GROUP BY w.ord
ORDER BY w.ord
