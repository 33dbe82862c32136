-- Rows of the given keys, with whether the transaction that wrote each row
-- had committed in snapshot $2 (a pg_current_snapshot() taken earlier). The
-- row's xmin has 32 bits: it is widened to the 64-bit id nearest the
-- snapshot's xmax (ids 0–2 are frozen or bootstrap rows: always settled).
-- {key}, {row} and {table} are filled in by pgferry with escaped identifiers.
WITH snap AS (
  SELECT $2::pg_snapshot AS s, pg_catalog.pg_snapshot_xmax($2::pg_snapshot)::text::bigint AS xmax
)
SELECT {key} AS k,
       hashtextextended({row}, 0)::text AS h,
       CASE WHEN x.xid32 < 3 THEN true
            ELSE pg_catalog.pg_visible_in_snapshot(greatest(3, snap.xmax + CASE WHEN x.d > 2147483648 THEN x.d - 4294967296
                                                                         WHEN x.d < -2147483648 THEN x.d + 4294967296
                                                                         ELSE x.d END)::text::xid8, snap.s)
       END AS settled
FROM {table} t
CROSS JOIN snap
CROSS JOIN LATERAL (SELECT t.xmin::text::bigint AS xid32, t.xmin::text::bigint - (snap.xmax & 4294967295) AS d) x
WHERE {key} = ANY($1::text[])
