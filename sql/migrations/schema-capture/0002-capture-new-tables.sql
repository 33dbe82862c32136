-- Migration schema-capture/0002: trigger capture takes tables created later, as FOR ALL TABLES does.
--
-- When a trigger-capture source takes every table (pgferry.capture_state.all_tables: its config
-- names no tables and excludes none), CREATE TABLE puts pgferry's capture triggers on the new
-- table in its own transaction, so no row written to it is missed. Event triggers on one event
-- fire in the order of their names: this one (pgferry_capture_…) runs before
-- pgferry_schema_changes, which then finds the table captured and writes the CREATE into the
-- change log ahead of its rows; replicas that take new tables create it (schema_changes: apply).
--
-- The tables it takes are the ones trigger capture's start-up would (capture/tables.ts,
-- CANDIDATE_TABLES): plain tables and partition roots (a partition is captured through its
-- root), outside pgferry's and the system's schemas; and, as start-up refuses them, not a table
-- with a column pgferry cannot carry (PUBLISHED_COLUMNS: pseudo-types, the internal types whose
-- input refuses every value, domains and arrays over them). Temporary tables, tables of an
-- extension and CREATE TABLE AS / SELECT INTO (rows written before this trigger runs) are left
-- out. A failure never blocks the user's CREATE TABLE: it is a WARNING.
--
-- A table created standalone and then attached as a partition (CREATE TABLE … (LIKE parent),
-- then ALTER TABLE parent ATTACH PARTITION, as pg_partman does) would make the ATTACH fail:
-- PostgreSQL clones the root's row trigger pgferry_capture onto it and refuses a second trigger
-- of that name. So the tables this trigger took are listed in pgferry.new_tables; before an
-- ALTER TABLE that attaches one of them (ddl_command_start) its own pgferry_capture is set
-- aside, and after any ALTER TABLE (ddl_command_end) a table of the list that is now a partition
-- keeps only the clone (its rows are captured through the root) and loses its other pgferry
-- triggers, while one without a row trigger gets its own back. A failed ATTACH rolls all of it
-- back. An ATTACH run inside a function does not show in the statement's text: PostgreSQL refuses
-- it, loudly (the README says what to do).
CREATE TABLE IF NOT EXISTS pgferry.new_tables (
  relid oid PRIMARY KEY
);

CREATE OR REPLACE FUNCTION pgferry.carriable_columns(rel oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  WITH RECURSIVE under(typid) AS (
    SELECT a.atttypid FROM pg_attribute a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
    UNION
    SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END
    FROM under u JOIN pg_type t ON t.oid = u.typid
    WHERE t.typtype = 'd' OR (t.typelem <> 0 AND t.typsubscript = 'pg_catalog.array_subscript_handler'::regproc)
  )
  SELECT NOT EXISTS (
    SELECT 1 FROM under u JOIN pg_type t ON t.oid = u.typid
    WHERE t.typtype = 'p' OR t.typinput::text IN ('pg_node_tree_in', 'pg_ndistinct_in', 'pg_dependencies_in',
          'pg_mcv_list_in', 'brin_bloom_summary_in', 'brin_minmax_multi_summary_in'))
$$;

-- The row trigger of trigger capture on one table (the same statement as capture/trigger/install.ts).
CREATE OR REPLACE FUNCTION pgferry.add_capture_row_trigger(rel oid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  nsp text;
  tbl text;
BEGIN
  SELECT n.nspname::text, c.relname::text INTO nsp, tbl FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel;
  EXECUTE format('CREATE TRIGGER pgferry_capture AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION pgferry.capture_row(%L, %L, %L)',
                 rel::regclass, nsp, tbl, rel::text);
END
$$;

CREATE OR REPLACE FUNCTION pgferry.capture_new_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  cmd record;
  args text;
BEGIN
  IF to_regclass('pgferry.events') IS NULL OR to_regclass('pgferry.capture_state') IS NULL THEN
    RETURN; -- no trigger capture here
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'pgferry.capture_state'::regclass AND attname = 'all_tables' AND NOT attisdropped) THEN
    RETURN; -- source/0003 not applied yet
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pgferry.capture_state s WHERE s.all_tables) THEN
    RETURN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgferry_schema_changes' AND evtenabled <> 'D') THEN
    RETURN; -- the CREATE would not reach replicas: the table waits for table add, as without this trigger
  END IF;
  FOR cmd IN
    SELECT DISTINCT d.objid, n.nspname::text AS schema_name, c.relname::text AS table_name, c.relkind
    FROM pg_event_trigger_ddl_commands() d
    JOIN pg_class c ON c.oid = d.objid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE d.classid = 'pg_class'::regclass AND d.command_tag = 'CREATE TABLE' AND NOT d.in_extension
      AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence <> 't'
      AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgferry', 'pgferry_shadow')
      AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
      AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = d.objid AND t.tgname = 'pgferry_capture' AND NOT t.tgisinternal)
  LOOP
    BEGIN
      IF NOT pgferry.carriable_columns(cmd.objid) THEN
        RAISE WARNING 'pgferry: table %.% is not captured: it has a column pgferry cannot carry (pgferry up says which)', quote_ident(cmd.schema_name), quote_ident(cmd.table_name);
        CONTINUE;
      END IF;
      -- A new table has no shape yet; one left by a dropped table whose oid was reused is not its.
      DELETE FROM pgferry.table_shapes WHERE relid = cmd.objid;
      args := format('%L, %L, %L', cmd.schema_name, cmd.table_name, cmd.objid::text);
      PERFORM pgferry.add_capture_row_trigger(cmd.objid);
      EXECUTE format('CREATE TRIGGER pgferry_truncate AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION pgferry.capture_truncate(%s)', cmd.objid::regclass, args);
      EXECUTE format('CREATE TRIGGER pgferry_wake AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION pgferry.wake()', cmd.objid::regclass);
      IF cmd.relkind = 'r' THEN -- only a plain table can later be attached as a partition
        INSERT INTO pgferry.new_tables (relid) VALUES (cmd.objid) ON CONFLICT DO NOTHING;
      END IF;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'pgferry: table %.% is not captured until pgferry up runs again: %', quote_ident(cmd.schema_name), quote_ident(cmd.table_name), SQLERRM;
    END;
  END LOOP;
END
$$;

-- Before an ALTER TABLE that attaches a partition: the row trigger of the standalone table being
-- attached, if this trigger took it, is set aside (the ATTACH clones the root's in its place). The
-- partition is read from the statement's text (`ATTACH PARTITION [schema.]name`, quoted or not); a
-- name that matches more than one table only costs a drop and a re-create in the same transaction.
-- Nothing is set aside unless pgferry_capture_attach_end will look after it.
CREATE OR REPLACE FUNCTION pgferry.before_attach() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on -- the pattern's backslashes, whatever the session says
AS $$
DECLARE
  m text[];
  nsp text;
  tbl text;
  rel oid;
BEGIN
  IF to_regclass('pgferry.new_tables') IS NULL
     OR NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgferry_capture_attach_end' AND evtenabled <> 'D') THEN
    RETURN;
  END IF;
  FOR m IN
    SELECT regexp_matches(current_query(), 'attach\s+partition\s+("(?:[^"]|"")+"|[^\s."(]+)(?:\s*\.\s*("(?:[^"]|"")+"|[^\s."(]+))?', 'gi')
  LOOP
    IF m[2] IS NULL THEN
      nsp := NULL;
      tbl := m[1];
    ELSE
      nsp := m[1];
      tbl := m[2];
    END IF;
    -- An identifier as PostgreSQL reads it: quoted kept as written, otherwise folded to lower case.
    tbl := CASE WHEN tbl LIKE '"%' THEN replace(substr(tbl, 2, length(tbl) - 2), '""', '"') ELSE lower(tbl) END;
    nsp := CASE WHEN nsp IS NULL THEN NULL WHEN nsp LIKE '"%' THEN replace(substr(nsp, 2, length(nsp) - 2), '""', '"') ELSE lower(nsp) END;
    FOR rel IN
      SELECT nt.relid FROM pgferry.new_tables nt JOIN pg_class c ON c.oid = nt.relid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND NOT c.relispartition AND c.relname = tbl AND (nsp IS NULL OR n.nspname = nsp)
        AND EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = nt.relid AND t.tgname = 'pgferry_capture' AND NOT t.tgisinternal AND t.tgparentid = 0)
    LOOP
      EXECUTE format('DROP TRIGGER pgferry_capture ON %s', rel::regclass);
    END LOOP;
  END LOOP;
END
$$;

-- After any ALTER TABLE, without relying on what before_attach saw (an ALTER nested in another may
-- have run in between): a table this trigger took that is now a partition with the root's clone
-- is captured through the root and keeps none of its own triggers; one that lacks its row trigger
-- (still standalone, or a partition of a root that is not captured) gets it back.
CREATE OR REPLACE FUNCTION pgferry.after_attach() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r record;
BEGIN
  IF to_regclass('pgferry.new_tables') IS NULL THEN
    RETURN;
  END IF;
  FOR r IN
    SELECT nt.relid, c.relispartition,
           EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = nt.relid AND t.tgname = 'pgferry_capture' AND NOT t.tgisinternal AND t.tgparentid <> 0) AS cloned,
           EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = nt.relid AND t.tgname = 'pgferry_capture' AND NOT t.tgisinternal) AS has_row_trigger
    FROM pgferry.new_tables nt JOIN pg_class c ON c.oid = nt.relid
    WHERE c.relkind = 'r'
  LOOP
    IF r.cloned THEN
      EXECUTE format('DROP TRIGGER IF EXISTS pgferry_truncate ON %s', r.relid::regclass);
      EXECUTE format('DROP TRIGGER IF EXISTS pgferry_wake ON %s', r.relid::regclass);
      DELETE FROM pgferry.new_tables WHERE relid = r.relid;
    ELSIF NOT r.has_row_trigger AND EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = r.relid AND t.tgname = 'pgferry_truncate' AND NOT t.tgisinternal) THEN
      PERFORM pgferry.add_capture_row_trigger(r.relid);
    END IF;
  END LOOP;
  DELETE FROM pgferry.new_tables nt WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = nt.relid);
END
$$;

REVOKE ALL ON FUNCTION pgferry.capture_new_tables(), pgferry.before_attach(), pgferry.after_attach(), pgferry.add_capture_row_trigger(oid) FROM PUBLIC;

DROP EVENT TRIGGER IF EXISTS pgferry_capture_new_tables;
CREATE EVENT TRIGGER pgferry_capture_new_tables ON ddl_command_end
  WHEN TAG IN ('CREATE TABLE')
  EXECUTE FUNCTION pgferry.capture_new_tables();
DROP EVENT TRIGGER IF EXISTS pgferry_capture_attach_start;
CREATE EVENT TRIGGER pgferry_capture_attach_start ON ddl_command_start
  WHEN TAG IN ('ALTER TABLE')
  EXECUTE FUNCTION pgferry.before_attach();
DROP EVENT TRIGGER IF EXISTS pgferry_capture_attach_end;
CREATE EVENT TRIGGER pgferry_capture_attach_end ON ddl_command_end
  WHEN TAG IN ('ALTER TABLE')
  EXECUTE FUNCTION pgferry.after_attach();
