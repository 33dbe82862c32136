-- One captured table as the change envelope describes it: every non-dropped
-- column in attnum order (as NEW::text prints them), its type, whether it is
-- generated (printed but not sent), whether it identifies the row, and the
-- table's identity: its primary key, else its replica identity index, else
-- the whole row.
WITH rel AS (SELECT $1::regclass AS oid),
     idx AS (
       SELECT i.indkey, CASE WHEN i.indisprimary THEN 'default' ELSE 'index' END AS identity
       FROM pg_catalog.pg_index i, rel
       WHERE i.indrelid = rel.oid AND (i.indisprimary OR i.indisreplident)
       ORDER BY i.indisprimary DESC LIMIT 1
     )
SELECT a.attname AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
       a.attgenerated <> '' AS generated,
       coalesce(a.attnum = ANY ((SELECT indkey FROM idx)::int2[]), false) AS key,
       coalesce((SELECT identity FROM idx), 'full') AS identity
FROM pg_catalog.pg_attribute a, rel
WHERE a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
