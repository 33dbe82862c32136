-- Migration schema-capture/0003: a CREATE TABLE is described as a CREATE TABLE.
--
-- pg_event_trigger_ddl_commands() lists, for CREATE TABLE with a foreign key (or LIKE … INCLUDING
-- constraints), an ALTER TABLE row for the same table besides the CREATE TABLE one. The function of
-- 0001 kept one row per table with DISTINCT ON (objid) in no particular tag order, so such a CREATE
-- could reach replicas as an "ALTER TABLE" of a table with no earlier shape, which they refuse. The
-- creating tag now wins. The function is otherwise 0001's (a migration is applied once: an install
-- that has 0001 gets this by this file).
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
    ORDER BY d.objid, d.command_tag NOT IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO')
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
