-- Published tables on which the source refuses UPDATE and DELETE: replica
-- identity NOTHING, or DEFAULT without a primary key.
SELECT n.nspname AS schema_name, c.relname AS table_name, c.relreplident::text AS identity
FROM pg_catalog.pg_publication_tables pt
JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
WHERE pt.pubname = $1
  AND (c.relreplident = 'n'
       OR (c.relreplident = 'd' AND NOT EXISTS (
             SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))
ORDER BY 1, 2
