/**
 * Schema changes in WAL capture: the event trigger that describes each change
 * to a published table as a logical message in its transaction
 * (sql/migrations/schema-capture; the assembler turns the message into a
 * `schema` change), installed at start-up and removed by uninstall.
 *
 * Creating an event trigger needs a superuser. Without one, capture still
 * runs and start-up says, once, that schema changes must then be applied to
 * replicas by hand, and what enables them.
 */
import type pg from 'pg';
import { describeCause, isPrivilegeError } from '../../errors';
import { migrate } from '../../migrations';
import { publicationName } from '../../names';

/** The shape of every published table that has none recorded yet (a table published before the trigger, or since). */
const RECORD_SHAPES = `
INSERT INTO pgferry.table_shapes (relid, shape)
SELECT c.oid, pgferry.table_shape(c.oid)
FROM pg_catalog.pg_publication_tables pt
JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
WHERE pt.pubname = $1 AND n.nspname <> 'pgferry'
ON CONFLICT (relid) DO NOTHING`;

/** Install (or update) the event trigger and record the published tables' shapes; returns warnings for people. */
export async function installSchemaCapture(c: pg.ClientBase, source: string): Promise<string[]> {
  try {
    await migrate(c, 'schema-capture');
    await c.query(RECORD_SHAPES, [publicationName(source)]);
    return [];
  } catch (err) {
    if (!isPrivilegeError(err)) throw err;
    return [
      `source '${source}': schema changes are not captured: installing the event trigger pgferry_schema_changes needs a superuser (${describeCause(err)}); ` +
        `until it is installed, apply each ALTER TABLE to the replicas by hand before the rows that need it, as with native logical replication. ` +
        `To capture them, run pgferry up once as a superuser`,
    ];
  }
}

/** Remove the event trigger and its functions (the pgferry schema itself goes with trigger capture's uninstall). */
export async function uninstallSchemaCapture(c: pg.ClientBase): Promise<string[]> {
  const { rows } = await c.query(`SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'pgferry_schema_changes'`);
  if (!rows.length) return [];
  await c.query('DROP EVENT TRIGGER pgferry_schema_changes');
  await c.query('DROP FUNCTION IF EXISTS pgferry.capture_schema_change(), pgferry.table_shape(oid), pgferry.publications_of(oid)');
  await c.query('DROP TABLE IF EXISTS pgferry.table_shapes');
  await c.query(`DELETE FROM pgferry.migrations WHERE name LIKE 'schema-capture/%'`);
  return ['event trigger pgferry_schema_changes (schema-change capture)'];
}
