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
-- to the next start-up, which says so. A failure never blocks the user's CREATE TABLE: it is a
-- WARNING, and the table is captured from the next start-up on.
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
    SELECT DISTINCT d.objid, n.nspname::text AS schema_name, c.relname::text AS table_name
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
      EXECUTE format('CREATE TRIGGER pgferry_capture AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION pgferry.capture_row(%s)', cmd.objid::regclass, args);
      EXECUTE format('CREATE TRIGGER pgferry_truncate AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION pgferry.capture_truncate(%s)', cmd.objid::regclass, args);
      EXECUTE format('CREATE TRIGGER pgferry_wake AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION pgferry.wake()', cmd.objid::regclass);
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'pgferry: table %.% is not captured until pgferry up runs again: %', quote_ident(cmd.schema_name), quote_ident(cmd.table_name), SQLERRM;
    END;
  END LOOP;
END
$$;

REVOKE ALL ON FUNCTION pgferry.capture_new_tables() FROM PUBLIC;

DROP EVENT TRIGGER IF EXISTS pgferry_capture_new_tables;
CREATE EVENT TRIGGER pgferry_capture_new_tables ON ddl_command_end
  WHEN TAG IN ('CREATE TABLE')
  EXECUTE FUNCTION pgferry.capture_new_tables();
