-- What CREATE TABLE needs to recreate the given tables elsewhere: each
-- column with its type, default, NOT NULL, identity and generation
-- expression, the primary key, and the sequences their defaults use
-- (lists as JSON text: pgferry reads every value as text).
SELECT w.schema_name, w.table_name,
       a.attname AS column_name,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type_name,
       a.attnotnull AS not_null,
       a.attidentity::text AS identity,
       a.attgenerated::text AS generated,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS default_expr,
       (SELECT pg_catalog.to_json(array_agg(s.oid::regclass::text))::text FROM pg_catalog.pg_depend dep
          JOIN pg_catalog.pg_class s ON s.oid = dep.refobjid AND s.relkind = 'S'
         WHERE dep.classid = 'pg_catalog.pg_attrdef'::regclass AND dep.objid = d.oid) AS sequences,
       (SELECT pg_catalog.to_json(array_agg(k.attname ORDER BY x.n))::text FROM pg_catalog.pg_index i
          CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS x(attnum, n)
          JOIN pg_catalog.pg_attribute k ON k.attrelid = i.indrelid AND k.attnum = x.attnum
         WHERE i.indrelid = c.oid AND i.indisprimary) AS primary_key
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(schema_name, table_name, ord)
JOIN pg_catalog.pg_namespace n ON n.nspname = w.schema_name
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.table_name
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
ORDER BY w.ord, a.attnum
