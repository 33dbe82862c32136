-- Migration schema-capture/0001: schema changes travel with the data (WAL capture).
--
-- An event trigger on ddl_command_end describes every change to a table that
-- pgferry captures, in the DDL's own transaction, so it arrives at its exact
-- place between the data: for a table a pgferry publication (pgferry_<source>)
-- sends, as a transactional logical message (prefix 'pgferry.schema'); for a
-- table with trigger capture, as an event 'S' in pgferry.events. The description is the table's shape
-- before and after, never the statement's text:
--   { oid, command, old: shape | null, new: shape, fills, unfilled, publications, error? }
--   shape: { schema, table, columns: [{ num, name, type, notNull, key, generated }] }
-- Columns are matched by attnum, which a rename keeps: a rename is a rename.
-- `fills`: for columns added with a default PostgreSQL stored once for the
-- existing rows (a non-volatile default: attmissingval), that value's text.
-- `unfilled`: columns added with a volatile default or as an identity to a
-- table with rows: their per-row values are never in the WAL.
--
-- pgferry.table_shapes keeps each published table's last shape (set at start
-- for tables without one, updated here). Creating an event trigger needs a
-- superuser; without one, pgferry says so at start-up and schema changes are
-- applied to replicas by hand, as with native logical replication.
--
-- SECURITY DEFINER, and it runs no code of the table's (defaults are read
-- from attmissingval, never evaluated). A failure to describe a change
-- never blocks the user's DDL: it emits the error instead, and replicas stop
-- there with it.
CREATE TABLE IF NOT EXISTS pgferry.table_shapes (
  relid oid   PRIMARY KEY,
  shape jsonb NOT NULL
);

-- Any role may call pg_logical_emit_message, so a message alone proves nothing: each description
-- carries this key, readable only by pgferry's roles (capture compares it, and refuses a message
-- without it: a role that could forge one could otherwise drop columns on every replica).
CREATE TABLE IF NOT EXISTS pgferry.schema_capture_key (
  key text NOT NULL DEFAULT pg_catalog.gen_random_uuid()::text
);
REVOKE ALL ON pgferry.schema_capture_key FROM PUBLIC;
INSERT INTO pgferry.schema_capture_key SELECT WHERE NOT EXISTS (SELECT 1 FROM pgferry.schema_capture_key);

CREATE OR REPLACE FUNCTION pgferry.table_shape(rel oid) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT jsonb_build_object(
    'schema', n.nspname::text,
    'table', c.relname::text,
    'columns', coalesce((
      SELECT jsonb_agg(jsonb_build_object(
               'num', a.attnum, 'name', a.attname::text, 'type', format_type(a.atttypid, a.atttypmod),
               'notNull', a.attnotnull, 'generated', a.attgenerated <> '',
               'key', coalesce(a.attnum = ANY ((SELECT i.indkey FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)::int2[]), false))
             ORDER BY a.attnum)
      FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]'::jsonb))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid = rel
$$;

-- The pgferry publications that send table `rel` (any of them: one database may feed several sources).
CREATE OR REPLACE FUNCTION pgferry.publications_of(rel oid) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT array_agg(pt.pubname::text ORDER BY pt.pubname)
  FROM pg_publication_tables pt
  JOIN pg_namespace n ON n.nspname = pt.schemaname
  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
  WHERE c.oid = rel AND pt.pubname LIKE 'pgferry\_%'
$$;

CREATE OR REPLACE FUNCTION pgferry.capture_schema_change() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres' SET extra_float_digits = 3 SET lc_monetary = 'C' SET bytea_output = 'hex'
AS $$
DECLARE
  cmd record;
  col record;
  before jsonb;
  after jsonb;
  fills jsonb;
  unfilled text[];
  has_rows boolean;
  pubs text[];
  triggered boolean;
  payload text;
BEGIN
  FOR cmd IN
    SELECT DISTINCT ON (d.objid) d.objid, d.command_tag
    FROM pg_event_trigger_ddl_commands() d JOIN pg_class c ON c.oid = d.objid
    WHERE d.classid = 'pg_class'::regclass AND c.relkind IN ('r', 'p') AND c.relnamespace <> 'pgferry'::regnamespace
    ORDER BY d.objid
  LOOP
    BEGIN
      pubs := pgferry.publications_of(cmd.objid);
      triggered := to_regclass('pgferry.events') IS NOT NULL AND EXISTS (
        SELECT 1 FROM pg_trigger t WHERE t.tgrelid = cmd.objid AND t.tgname = 'pgferry_capture' AND NOT t.tgisinternal AND t.tgparentid = 0);
      -- The row trigger caches its table's shape per transaction: rows written after this change
      -- in the same transaction must record the new one (the table and each of its partitions).
      PERFORM pg_catalog.set_config('pgferry.shape_' || r.relid::oid, '', true)
        FROM (SELECT cmd.objid::regclass AS relid UNION SELECT p.relid FROM pg_catalog.pg_partition_tree(cmd.objid) p) r;
      IF pubs IS NULL AND NOT triggered THEN
        DELETE FROM pgferry.table_shapes WHERE relid = cmd.objid;
        CONTINUE;
      END IF;
      after := pgferry.table_shape(cmd.objid);
      SELECT s.shape INTO before FROM pgferry.table_shapes s WHERE s.relid = cmd.objid;
      IF before IS NOT DISTINCT FROM after THEN
        CONTINUE;
      END IF;
      fills := '{}';
      unfilled := '{}';
      has_rows := NULL;
      IF before IS NOT NULL THEN
        FOR col IN
          SELECT a.attname::text AS name, a.atthasmissing, (a.attmissingval::text::text[])[1] AS missing,
                 d.adbin IS NOT NULL AS has_default, a.attidentity <> '' AS is_identity
          FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE a.attrelid = cmd.objid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
            AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(before->'columns') b WHERE (b->>'num')::int = a.attnum)
        LOOP
          IF col.atthasmissing THEN
            fills := fills || jsonb_build_object(col.name, col.missing);
          ELSIF col.has_default OR col.is_identity THEN
            IF has_rows IS NULL THEN
              EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', cmd.objid::regclass) INTO has_rows;
            END IF;
            IF has_rows THEN
              unfilled := unfilled || col.name;
            END IF;
          END IF;
        END LOOP;
      END IF;
      payload := jsonb_build_object(
        'oid', cmd.objid, 'command', cmd.command_tag, 'old', before, 'new', after, 'fills', fills, 'unfilled', to_jsonb(unfilled), 'publications', to_jsonb(pubs),
        'key', (SELECT k.key FROM pgferry.schema_capture_key k LIMIT 1))::text;
      IF pubs IS NOT NULL THEN
        PERFORM pg_logical_emit_message(true, 'pgferry.schema', payload);
      END IF;
      IF triggered THEN
        INSERT INTO pgferry.events (op, rel_schema, rel_table, rel_oid, new_row) VALUES ('S', after->>'schema', after->>'table', cmd.objid, payload);
      END IF;
      INSERT INTO pgferry.table_shapes (relid, shape) VALUES (cmd.objid, after)
        ON CONFLICT (relid) DO UPDATE SET shape = EXCLUDED.shape;
    EXCEPTION WHEN OTHERS THEN
      pubs := pgferry.publications_of(cmd.objid);
      payload := jsonb_build_object('oid', cmd.objid, 'command', cmd.command_tag, 'old', NULL, 'new', NULL, 'error', SQLERRM, 'publications', to_jsonb(pubs),
                                    'key', (SELECT k.key FROM pgferry.schema_capture_key k LIMIT 1))::text;
      IF pubs IS NOT NULL THEN
        PERFORM pg_logical_emit_message(true, 'pgferry.schema', payload);
      END IF;
      IF to_regclass('pgferry.events') IS NOT NULL AND EXISTS (
           SELECT 1 FROM pg_trigger t WHERE t.tgrelid = cmd.objid AND t.tgname = 'pgferry_capture' AND NOT t.tgisinternal AND t.tgparentid = 0) THEN
        INSERT INTO pgferry.events (op, rel_schema, rel_table, rel_oid, new_row) VALUES ('S', '', '', cmd.objid, payload);
      END IF;
    END;
  END LOOP;
END
$$;

REVOKE ALL ON FUNCTION pgferry.capture_schema_change() FROM PUBLIC;

DROP EVENT TRIGGER IF EXISTS pgferry_schema_changes;
CREATE EVENT TRIGGER pgferry_schema_changes ON ddl_command_end
  WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO')
  EXECUTE FUNCTION pgferry.capture_schema_change();
