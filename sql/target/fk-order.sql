-- Foreign keys among the given tables on this database: (child, parent)
-- pairs as "schema.table" JSON, so rows can be inserted parents first.
SELECT pg_catalog.to_json(ARRAY[cn.nspname, c.relname])::text AS child,
       pg_catalog.to_json(ARRAY[pn.nspname, p.relname])::text AS parent
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_catalog.pg_class p ON p.oid = k.confrelid
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
WHERE k.contype = 'f' AND k.conrelid <> k.confrelid
  AND (cn.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))
  AND (pn.nspname, p.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))
