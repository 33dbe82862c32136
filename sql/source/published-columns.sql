-- Columns of the given (published) tables, in table and column order, with their
-- type and whether pgferry can carry their values. Values travel as text, so
-- a type is carried when PostgreSQL can read back what it prints: not so for
-- pseudo-types and the internal types whose input function refuses every
-- value (pg_node_tree and the statistics types), nor for domains and arrays
-- over them. Stored generated columns are left out: the source does not send
-- them and the replica computes its own.
WITH RECURSIVE cols AS (
  SELECT pt.schemaname, pt.tablename, a.attrelid, a.attnum, a.attname, a.atttypid,
         pg_catalog.format_type(a.atttypid, a.atttypmod) AS type_name
  FROM unnest($1::text[], $2::text[]) AS pt(schemaname, tablename)
  JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
  JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
  WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
),
-- each column's type, the type under each domain, the element of each array
under(attrelid, attnum, typid) AS (
  SELECT attrelid, attnum, atttypid FROM cols
  UNION
  SELECT u.attrelid, u.attnum, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END
  FROM under u JOIN pg_catalog.pg_type t ON t.oid = u.typid
  WHERE t.typtype = 'd' OR (t.typelem <> 0 AND t.typsubscript = 'pg_catalog.array_subscript_handler'::regproc)
)
SELECT cols.schemaname, cols.tablename, cols.attname AS column_name, cols.type_name,
       NOT EXISTS (
         SELECT 1 FROM under u JOIN pg_catalog.pg_type t ON t.oid = u.typid
         WHERE u.attrelid = cols.attrelid AND u.attnum = cols.attnum
           AND (t.typtype = 'p' OR t.typinput::text IN ('pg_node_tree_in', 'pg_ndistinct_in', 'pg_dependencies_in',
                'pg_mcv_list_in', 'brin_bloom_summary_in', 'brin_minmax_multi_summary_in'))
       ) AS carriable
FROM cols
ORDER BY cols.schemaname, cols.tablename, cols.attnum
