-- Columns of the given (schema, table) pairs on this database, with the type
-- and whether an INSERT that leaves the column out must fail (NOT NULL, and
-- no default, identity or generation expression to fill it).
SELECT n.nspname AS schema_name, c.relname AS table_name, a.attname AS column_name,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type_name,
       (a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '') AS required,
       a.attgenerated <> '' AS generated
FROM unnest($1::text[], $2::text[]) AS w(schema_name, table_name)
JOIN pg_catalog.pg_namespace n ON n.nspname = w.schema_name
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.table_name AND c.relkind IN ('r', 'p')
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
WHERE a.attnum > 0 AND NOT a.attisdropped
ORDER BY 1, 2, a.attnum
