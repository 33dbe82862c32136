-- Which of the given (schema, table) pairs do not exist as tables on this database?
SELECT w.schema_name, w.table_name
FROM unnest($1::text[], $2::text[]) AS w(schema_name, table_name)
WHERE NOT EXISTS (
  SELECT 1 FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = w.schema_name AND c.relname = w.table_name
    AND c.relkind IN ('r', 'p')
)
