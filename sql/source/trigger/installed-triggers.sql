-- pgferry's triggers present on the given tables: (schema, table, trigger, number of arguments).
SELECT n.nspname AS schema_name, c.relname AS table_name, t.tgname AS trigger_name, t.tgnargs AS nargs
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE t.tgname IN ('pgferry_capture', 'pgferry_truncate', 'pgferry_wake') AND NOT t.tgisinternal AND t.tgparentid = 0
  AND (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))
