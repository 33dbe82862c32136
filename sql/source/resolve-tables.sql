-- Resolve user-given table names (schema may be empty: then the search_path
-- decides, as psql would) to (schema, table, oid). Missing ones come back with NULL oid.
SELECT w.ord, w.spec, n.nspname AS schema_name, c.relname AS table_name, c.oid::int AS oid, c.relkind::text AS relkind
FROM unnest($1::text[]) WITH ORDINALITY AS w(spec, ord)
LEFT JOIN pg_catalog.pg_class c ON c.oid = to_regclass(w.spec)
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
ORDER BY w.ord
