/** Removing trigger capture from a source: the capture triggers and the pgferry schema (change log, ticks, functions), in one transaction. */
import type pg from 'pg';
import { relLabel } from '../../change';
import { capturedTables, dropTriggers } from './install';

export async function uninstallTriggers(c: pg.ClientBase, _source: string): Promise<string[]> {
  const removed: string[] = [];
  await c.query('BEGIN');
  try {
    for (const t of await capturedTables(c)) {
      await dropTriggers(c, t);
      removed.push(`capture triggers on ${relLabel(t)}`);
    }
    if ((await c.query(`SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'pgferry'`)).rows.length) {
      await c.query('DROP SCHEMA pgferry CASCADE');
      removed.push('schema pgferry (change log, ticks, capture functions)');
    }
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
  return removed;
}
