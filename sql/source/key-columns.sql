-- The columns that identify a row of a table: its primary key, else its
-- replica identity index; none for a table without either.
SELECT a.attname AS column_name
FROM pg_catalog.pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS x(attnum, n)
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = x.attnum
WHERE i.indrelid = $1::regclass
  AND i.indexrelid = (SELECT ix.indexrelid FROM pg_catalog.pg_index ix
                      WHERE ix.indrelid = $1::regclass AND (ix.indisprimary OR ix.indisreplident)
                      ORDER BY ix.indisprimary DESC LIMIT 1)
ORDER BY x.n
