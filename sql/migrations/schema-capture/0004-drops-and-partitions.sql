-- Migration schema-capture/0004: DROP TABLE and partition maintenance travel with the data.
--
-- Two kinds of source change used to pass replicas by in silence (issue 26):
--
-- * DROP TABLE of a captured table. A sql_drop event trigger (pgferry_schema_drops) describes it
--   in the dropping transaction as a schema change { command: 'DROP TABLE', old: shape, new: null },
--   so replicas drop the table in its place (schema_changes policy), and a table created later
--   under the same name starts empty, as on the source, instead of merging with the old rows.
--   Which pgferry publications sent the table is read from the dropped objects themselves (the
--   table's 'publication relation' rows) and the FOR ALL TABLES ones; trigger capture from its
--   dropped row trigger pgferry_capture.
--
-- * Partition maintenance under a captured partitioned table. pgferry publishes partitioned
--   tables through their root, and PostgreSQL then sends no TRUNCATE of a partition, and nothing
--   of partitions created, attached, detached or dropped. Each of these is now a schema change of
--   the ROOT (old = new = the root's shape) with a `partition` member:
--     { action: create | attach | detach | drop | truncate, schema, table, parent, chain,
--       partitionKey, hasRows, captured }
--   `chain`: the partition's bound and the partition key it is a bound of, from the partition up
--   to the root ({ strategy: r|l|h, keys: [column names] | null for an expression key, bound:
--   pg_get_expr text }); a replica that does not mirror the partitioning deletes the rows inside
--   those bounds from its root (apply/schema-apply.ts parses the bound, never runs it as text).
--   pgferry.partitions records every partition of a captured root (the catalog is gone when a
--   partition is dropped); the event trigger pgferry_schema_partitions reconciles a root's tree
--   after every CREATE TABLE and ALTER TABLE that touches it, and a statement-level trigger
--   pgferry_partition_truncate on every partition describes its TRUNCATE.
CREATE TABLE IF NOT EXISTS pgferry.partitions (
  relid oid   PRIMARY KEY,
  root  oid   NOT NULL,
  info  jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS partitions_root ON pgferry.partitions (root);
-- Roots whose tree has been recorded: members of a root recorded here that appear later were
-- created or attached; a root seen the first time is recorded without describing anything.
CREATE TABLE IF NOT EXISTS pgferry.partition_roots (
  root oid PRIMARY KEY
);

-- A partition key as column names in key order; null when any part is an expression.
CREATE OR REPLACE FUNCTION pgferry.partition_key(parent oid) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT jsonb_build_object(
    'strategy', pt.partstrat::text,
    'keys', CASE WHEN 0 = ANY (pt.partattrs::int2[]) THEN NULL ELSE (
      SELECT jsonb_agg(a.attname::text ORDER BY k.ord)
      FROM unnest(pt.partattrs::int2[]) WITH ORDINALITY AS k(num, ord)
      JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = k.num) END)
  FROM pg_partitioned_table pt WHERE pt.partrelid = parent
$$;

-- Where a partition stands: its names, its parent, its root, and its bounds up to the root.
-- pg_get_expr prints a bound's values with the session's settings: they are fixed here, whatever
-- the session that runs the DDL or TRUNCATE says (a DateStyle of 'SQL, DMY' would send 02/01/2026).
CREATE OR REPLACE FUNCTION pgferry.partition_info(rel oid) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres' SET extra_float_digits = 3 SET standard_conforming_strings = on SET bytea_output = 'hex'
AS $$
  WITH RECURSIVE up(relid, depth) AS (
    SELECT rel, 0
    UNION ALL
    SELECT i.inhparent, u.depth + 1
    FROM up u JOIN pg_class c ON c.oid = u.relid AND c.relispartition JOIN pg_inherits i ON i.inhrelid = u.relid
  )
  SELECT jsonb_build_object(
    'schema', n.nspname::text,
    'table', c.relname::text,
    'parent', (SELECT jsonb_build_object('schema', pn.nspname::text, 'table', pc.relname::text)
               FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace
               WHERE i.inhrelid = rel),
    'partitionKey', CASE WHEN c.relkind = 'p' THEN pgferry.partition_key(rel) END,
    'chain', (SELECT jsonb_agg(pgferry.partition_key(i.inhparent) || jsonb_build_object('bound', pg_get_expr(pc.relpartbound, pc.oid)) ORDER BY u.depth)
              FROM up u JOIN pg_class pc ON pc.oid = u.relid AND pc.relispartition JOIN pg_inherits i ON i.inhrelid = u.relid))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid = rel
$$;

-- Write one description where capture reads it: a logical message for each pgferry publication
-- that sends the table (WAL capture), an event 'S' when the table has trigger capture.
CREATE OR REPLACE FUNCTION pgferry.emit_schema_change(rel oid, rel_schema text, rel_table text, pubs text[], triggered boolean, payload jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  body text := (payload || jsonb_build_object('publications', to_jsonb(pubs), 'key', (SELECT k.key FROM pgferry.schema_capture_key k LIMIT 1)))::text;
BEGIN
  IF pubs IS NOT NULL THEN
    PERFORM pg_logical_emit_message(true, 'pgferry.schema', body);
  END IF;
  IF triggered THEN
    INSERT INTO pgferry.events (op, rel_schema, rel_table, rel_oid, new_row) VALUES ('S', rel_schema, rel_table, rel, body);
  END IF;
END
$$;

-- Whether trigger capture has its own row trigger on a table.
CREATE OR REPLACE FUNCTION pgferry.trigger_captured(rel oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT to_regclass('pgferry.events') IS NOT NULL AND EXISTS (
    SELECT 1 FROM pg_trigger t WHERE t.tgrelid = rel AND t.tgname = 'pgferry_capture' AND NOT t.tgisinternal AND t.tgparentid = 0)
$$;

-- A description of a captured root that leaves its shape as it is (before = after = its shape, so
-- it routes to the root), with `extra`: { partition } or { error }.
CREATE OR REPLACE FUNCTION pgferry.emit_root_change(root oid, command text, extra jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  shape jsonb := pgferry.table_shape(root);
BEGIN
  PERFORM pgferry.emit_schema_change(root, shape->>'schema', shape->>'table', pgferry.publications_of(root), pgferry.trigger_captured(root),
    jsonb_build_object('oid', root, 'command', command, 'old', shape, 'new', shape, 'fills', '{}'::jsonb, 'unfilled', '[]'::jsonb) || extra);
END
$$;

-- One partition change of a captured root, described and written.
CREATE OR REPLACE FUNCTION pgferry.emit_partition_change(root oid, command text, part jsonb) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
  SELECT pgferry.emit_root_change(root, command, jsonb_build_object('partition', part))
$$;

-- A partition change of a captured root that could not be described: replicas that take the
-- root stop there with `error`.
CREATE OR REPLACE FUNCTION pgferry.emit_partition_error(root oid, command text, error text) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
  SELECT pgferry.emit_root_change(root, command, jsonb_build_object('error', error))
$$;

CREATE OR REPLACE FUNCTION pgferry.capture_partition_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on AS $$
DECLARE
  root oid := pg_partition_root(TG_RELID);
BEGIN
  -- A table detached since keeps this trigger: it is no partition any more.
  IF root IS NULL OR root = TG_RELID OR NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = TG_RELID AND c.relispartition) THEN
    RETURN NULL;
  END IF;
  IF pgferry.publications_of(root) IS NULL AND NOT pgferry.trigger_captured(root) THEN
    RETURN NULL;
  END IF;
  BEGIN
    PERFORM pgferry.emit_partition_change(root, 'TRUNCATE', pgferry.partition_info(TG_RELID) || jsonb_build_object('action', 'truncate'));
  EXCEPTION WHEN OTHERS THEN
    -- Never block the user's TRUNCATE: replicas stop at this description instead.
    PERFORM pgferry.emit_partition_error(root, 'TRUNCATE', 'the TRUNCATE of partition ' || TG_RELID::regclass::text || ' could not be described: ' || SQLERRM);
  END;
  RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION pgferry.capture_partition_truncate() FROM PUBLIC;

-- The partition's TRUNCATE trigger (a TRUNCATE trigger is never cloned from the root).
CREATE OR REPLACE FUNCTION pgferry.add_partition_truncate_trigger(rel oid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  -- A foreign table takes no TRUNCATE trigger (and its rows are not pgferry's to carry).
  IF NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = rel AND t.tgname = 'pgferry_partition_truncate')
     AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = rel AND c.relkind IN ('r', 'p')) THEN
    EXECUTE format('CREATE TRIGGER pgferry_partition_truncate AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION pgferry.capture_partition_truncate()', rel::regclass);
  END IF;
END
$$;

-- Whether trigger capture takes every table (source/0003's capture_state.all_tables). Read
-- through EXECUTE: on a WAL-capture source neither the table nor the column exists.
CREATE OR REPLACE FUNCTION pgferry.trigger_capture_takes_all_tables() RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  yes boolean := false;
BEGIN
  IF to_regclass('pgferry.capture_state') IS NULL OR NOT EXISTS (
       SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('pgferry.capture_state') AND attname = 'all_tables' AND NOT attisdropped) THEN
    RETURN false;
  END IF;
  EXECUTE 'SELECT EXISTS (SELECT 1 FROM pgferry.capture_state s WHERE s.all_tables)' INTO yes;
  RETURN yes;
END
$$;

-- Bring the record of a captured root's partitions up to date, describing what changed since
-- (`created`: the table the statement created, if any).
-- A root seen the first time is only recorded.
CREATE OR REPLACE FUNCTION pgferry.reconcile_partitions(r oid, created oid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  known boolean := EXISTS (SELECT 1 FROM pgferry.partition_roots pr WHERE pr.root = r);
  m record;
  info jsonb;
  has_rows boolean;
  fresh oid[] := '{}';
  new_roots oid[] := '{}';
  nr oid;
  nsp text;
  tbl text;
BEGIN
  -- Gone from the tree (dropped ones left the record in pgferry_schema_drops): detached.
  FOR m IN SELECT p.relid, p.info FROM pgferry.partitions p WHERE p.root = r
             AND p.relid NOT IN (SELECT t.relid FROM pg_partition_tree(r) t) ORDER BY p.relid LOOP
    DELETE FROM pgferry.partitions WHERE relid = m.relid;
    -- Trigger capture of all tables takes the detached table as a table of its own, as a FOR ALL
    -- TABLES publication does (its cloned row trigger went with the detach).
    IF pgferry.trigger_captured(r) AND NOT pgferry.trigger_captured(m.relid) AND pgferry.trigger_capture_takes_all_tables()
       AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = m.relid AND NOT c.relispartition) THEN
      PERFORM pgferry.add_capture_row_trigger(m.relid);
      SELECT n.nspname::text, c.relname::text INTO nsp, tbl FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = m.relid;
      EXECUTE format('CREATE TRIGGER pgferry_truncate AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION pgferry.capture_truncate(%L, %L, %L)',
                     m.relid::regclass, nsp, tbl, m.relid::text);
      EXECUTE format('CREATE TRIGGER pgferry_wake AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION pgferry.wake()', m.relid::regclass);
      INSERT INTO pgferry.new_tables (relid) SELECT m.relid FROM pg_class c WHERE c.oid = m.relid AND c.relkind = 'r' ON CONFLICT DO NOTHING;
    END IF;
    -- A detached table captured on its own from now on (a FOR ALL TABLES publication, trigger
    -- capture of all tables) is a table pgferry knows: its later DROP TABLE is described.
    IF pgferry.publications_of(m.relid) IS NOT NULL OR pgferry.trigger_captured(m.relid) THEN
      INSERT INTO pgferry.table_shapes (relid, shape) VALUES (m.relid, pgferry.table_shape(m.relid))
        ON CONFLICT (relid) DO UPDATE SET shape = EXCLUDED.shape;
      -- A partitioned table detached is a captured root of its own: its partitions are recorded
      -- under it (below, once this loop has let go of their records).
      IF EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = m.relid AND c.relkind = 'p') THEN
        new_roots := new_roots || m.relid;
      END IF;
    END IF;
    -- Only the top of a detached subtree is described (its partitions leave with it).
    IF known AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = m.relid) THEN
      PERFORM pgferry.emit_partition_change(r, 'ALTER TABLE',
        m.info || jsonb_build_object('action', 'detach', 'schema', n.nspname::text, 'table', c.relname::text))
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = m.relid;
    END IF;
  END LOOP;
  FOREACH nr IN ARRAY new_roots LOOP
    DELETE FROM pgferry.partition_roots WHERE root = nr;
    PERFORM pgferry.reconcile_partitions(nr, NULL);
  END LOOP;
  -- Recorded under another root, now in this tree (a partitioned table attached here with its
  -- partitions): its records move to this root; the attach itself is described below.
  UPDATE pgferry.partitions p SET root = r
  WHERE p.root <> r AND p.relid IN (SELECT t.relid FROM pg_partition_tree(r) t WHERE t.relid <> r);
  DELETE FROM pgferry.partition_roots pr WHERE pr.root IN (SELECT t.relid FROM pg_partition_tree(r) t WHERE t.relid <> r);
  -- In the tree, not recorded: created or attached.
  FOR m IN SELECT t.relid, t.parentrelid FROM pg_partition_tree(r) t
             WHERE t.relid <> r AND t.relid NOT IN (SELECT p.relid FROM pgferry.partitions p) ORDER BY t.level, t.relid LOOP
    info := pgferry.partition_info(m.relid);
    INSERT INTO pgferry.partitions (relid, root, info) VALUES (m.relid, r, info);
    PERFORM pgferry.add_partition_truncate_trigger(m.relid);
    fresh := fresh || m.relid;
    -- A partition of a partition that is new too came with it (an attached subtree is one attach).
    IF known AND NOT m.parentrelid = ANY (fresh) THEN
      IF m.relid = created THEN
        PERFORM pgferry.emit_partition_change(r, 'CREATE TABLE', info || jsonb_build_object('action', 'create', 'hasRows', false, 'captured', false));
      ELSE
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', m.relid::regclass) INTO has_rows;
        PERFORM pgferry.emit_partition_change(r, 'ALTER TABLE', info || jsonb_build_object(
          'action', 'attach', 'hasRows', has_rows, 'captured', EXISTS (SELECT 1 FROM pgferry.table_shapes s WHERE s.relid = m.relid)));
      END IF;
    END IF;
    -- Captured through the root from now on.
    DELETE FROM pgferry.table_shapes WHERE relid = m.relid;
  END LOOP;
  -- Renamed or moved since: the record follows (a replica that mirrors by name falls back to bounds).
  -- (names, parents, key columns renamed: what a later DROP of the partition needs is as it is now).
  UPDATE pgferry.partitions p SET info = pgferry.partition_info(p.relid)
  WHERE p.root = r AND p.info IS DISTINCT FROM pgferry.partition_info(p.relid);
  INSERT INTO pgferry.partition_roots (root) VALUES (r) ON CONFLICT DO NOTHING;
END
$$;

CREATE OR REPLACE FUNCTION pgferry.capture_partition_changes() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on
SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres' SET extra_float_digits = 3 SET lc_monetary = 'C' SET bytea_output = 'hex'
AS $$
DECLARE
  cmd record;
BEGIN
  FOR cmd IN
    SELECT DISTINCT ON (root) pg_partition_root(d.objid)::oid AS root, d.objid, d.command_tag
    FROM pg_event_trigger_ddl_commands() d JOIN pg_class c ON c.oid = d.objid
    WHERE d.classid = 'pg_class'::regclass AND c.relkind IN ('r', 'p') AND c.relnamespace <> 'pgferry'::regnamespace
      AND (c.relkind = 'p' OR c.relispartition)
    ORDER BY root, d.command_tag <> 'CREATE TABLE'
  LOOP
    CONTINUE WHEN cmd.root IS NULL;
    CONTINUE WHEN pgferry.publications_of(cmd.root) IS NULL AND NOT pgferry.trigger_captured(cmd.root);
    BEGIN
      PERFORM pgferry.reconcile_partitions(cmd.root, CASE WHEN cmd.command_tag = 'CREATE TABLE' THEN cmd.objid END);
    EXCEPTION WHEN OTHERS THEN
      -- Never block the user's DDL: replicas stop at this description instead.
      PERFORM pgferry.emit_partition_error(cmd.root, cmd.command_tag, 'partitions of the table could not be described: ' || SQLERRM);
    END;
  END LOOP;
END
$$;
REVOKE ALL ON FUNCTION pgferry.capture_partition_changes() FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgferry.capture_drops() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET standard_conforming_strings = on
SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres' SET extra_float_digits = 3 SET lc_monetary = 'C' SET bytea_output = 'hex'
AS $$
DECLARE
  obj record;
  part record;
  before jsonb;
  pubs text[];
  triggered boolean;
BEGIN
  FOR obj IN
    SELECT d.objid, d.schema_name, d.object_name, d.address_names FROM pg_event_trigger_dropped_objects() d
    WHERE d.classid = 'pg_class'::regclass AND d.object_type = 'table' AND d.objsubid = 0 AND d.schema_name <> 'pgferry'
    ORDER BY d.objid
  LOOP
    BEGIN
      SELECT p.root, p.info INTO part FROM pgferry.partitions p WHERE p.relid = obj.objid;
      IF FOUND THEN
        DELETE FROM pgferry.partitions WHERE relid = obj.objid;
        -- With its root (or a parent partition) dropped too, the drop of the whole tree says it all.
        IF EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = part.root)
           AND NOT EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() d, jsonb_to_record(part.info->'parent') AS pp(schema text, "table" text)
                           WHERE d.object_type = 'table' AND d.schema_name = pp.schema AND d.object_name = pp."table")
           AND (pgferry.publications_of(part.root) IS NOT NULL OR pgferry.trigger_captured(part.root)) THEN
          PERFORM pgferry.emit_partition_change(part.root, 'DROP TABLE',
            part.info || jsonb_build_object('action', 'drop', 'schema', obj.schema_name, 'table', obj.object_name));
        END IF;
        CONTINUE;
      END IF;
      SELECT s.shape INTO before FROM pgferry.table_shapes s WHERE s.relid = obj.objid;
      CONTINUE WHEN NOT FOUND;
      DELETE FROM pgferry.table_shapes WHERE relid = obj.objid;
      DELETE FROM pgferry.partition_roots WHERE root = obj.objid;
      DELETE FROM pgferry.partitions WHERE root = obj.objid;
      SELECT array_agg(DISTINCT x.pub ORDER BY x.pub) INTO pubs FROM (
        SELECT d.address_args[1] COLLATE "C" AS pub FROM pg_event_trigger_dropped_objects() d
        WHERE d.object_type = 'publication relation' AND d.address_names = obj.address_names AND d.address_args[1] LIKE 'pgferry\_%'
        UNION
        SELECT p.pubname::text COLLATE "C" FROM pg_publication p WHERE p.puballtables AND p.pubname LIKE 'pgferry\_%') x;
      triggered := to_regclass('pgferry.events') IS NOT NULL AND EXISTS (
        SELECT 1 FROM pg_event_trigger_dropped_objects() d
        WHERE d.object_type = 'trigger' AND d.address_names = obj.address_names || 'pgferry_capture'::text);
      PERFORM pgferry.emit_schema_change(obj.objid, obj.schema_name, obj.object_name, pubs, triggered,
        jsonb_build_object('oid', obj.objid, 'command', 'DROP TABLE', 'old', before, 'new', NULL, 'fills', '{}'::jsonb, 'unfilled', '[]'::jsonb));
    EXCEPTION WHEN OTHERS THEN
      -- Never block the user's DROP: replicas that take the table stop at this description instead.
      PERFORM pgferry.emit_schema_change(obj.objid, obj.schema_name, obj.object_name,
        (SELECT array_agg(p.pubname::text) FROM pg_publication p WHERE p.pubname LIKE 'pgferry\_%'), to_regclass('pgferry.events') IS NOT NULL,
        jsonb_build_object('oid', obj.objid, 'command', 'DROP TABLE', 'fills', '{}'::jsonb, 'unfilled', '[]'::jsonb,
                           'old', jsonb_build_object('schema', obj.schema_name, 'table', obj.object_name, 'columns', '[]'::jsonb), 'new', NULL,
                           'error', 'the drop of the table could not be described: ' || SQLERRM));
    END;
  END LOOP;
END
$$;
REVOKE ALL ON FUNCTION pgferry.capture_drops() FROM PUBLIC;

-- Record the partitions of every captured root that has none recorded (at start-up: roots
-- captured since, partitions made before this migration); returns how many were recorded.
CREATE OR REPLACE FUNCTION pgferry.record_partitions() RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  r oid;
  n int := 0;
BEGIN
  FOR r IN SELECT c.oid FROM pg_class c
           WHERE c.relkind = 'p' AND NOT c.relispartition AND c.relnamespace <> 'pgferry'::regnamespace
             AND NOT EXISTS (SELECT 1 FROM pgferry.partition_roots pr WHERE pr.root = c.oid)
             AND (pgferry.publications_of(c.oid) IS NOT NULL OR pgferry.trigger_captured(c.oid)) LOOP
    PERFORM pgferry.reconcile_partitions(r, NULL);
    n := n + 1;
  END LOOP;
  RETURN n;
END
$$;

DROP EVENT TRIGGER IF EXISTS pgferry_schema_partitions;
CREATE EVENT TRIGGER pgferry_schema_partitions ON ddl_command_end
  WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE')
  EXECUTE FUNCTION pgferry.capture_partition_changes();

DROP EVENT TRIGGER IF EXISTS pgferry_schema_drops;
-- Every tag: DROP SCHEMA … CASCADE, DROP OWNED, DROP TYPE … CASCADE drop tables too (the function
-- looks at the dropped tables only).
CREATE EVENT TRIGGER pgferry_schema_drops ON sql_drop
  EXECUTE FUNCTION pgferry.capture_drops();
