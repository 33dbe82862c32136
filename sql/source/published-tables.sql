-- Tables the publication sends, in a stable order.
SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables
WHERE pubname = $1 ORDER BY schemaname, tablename
