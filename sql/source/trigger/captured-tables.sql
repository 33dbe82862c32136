-- Tables with pgferry's capture trigger (trigger mode): the "publication".
SELECT DISTINCT n.nspname AS schemaname, c.relname AS tablename
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE t.tgname = 'pgferry_capture' AND NOT t.tgisinternal
ORDER BY 1, 2
