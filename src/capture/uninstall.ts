import { SourceError } from '../errors';
import { publicationName, slotName } from '../names';
import { ident, withClient } from '../pg';
import { loadSql } from '../sql';
import { relLabel } from '../change';
import { dropTriggers } from './trigger-source';

/**
 * `pgferry uninstall`: remove from a source everything pgferry installed, in
 * either mode — the replication slot (a forgotten slot pins WAL forever) and
 * the publication; the capture triggers and the pgferry schema. Says what it
 * removed. Refuses while a capture still holds the slot.
 */
export async function uninstallSource(url: string, source: string): Promise<string[]> {
  return withClient(`source '${source}'`, url, async (c) => {
    const removed: string[] = [];
    const slot = slotName(source);
    const s = (await c.query(loadSql('source/slot.sql'), [slot])).rows[0];
    if (s) {
      if (s.active === true || s.active === 't') {
        throw new SourceError(`source '${source}': replication slot ${slot} is in use by a running capture (pid ${s.active_pid}); stop pgferry first, then run pgferry uninstall again`);
      }
      await c.query('SELECT pg_catalog.pg_drop_replication_slot($1)', [slot]);
      removed.push(`replication slot ${slot}`);
    }
    const pub = publicationName(source);
    if ((await c.query('SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1', [pub])).rows.length) {
      await c.query(`DROP PUBLICATION ${ident(pub)}`);
      removed.push(`publication ${pub}`);
    }
    await c.query('BEGIN');
    for (const r of (await c.query(loadSql('source/trigger/captured-tables.sql'))).rows) {
      const t = { schema: r.schemaname as string, table: r.tablename as string };
      await dropTriggers(c, t);
      removed.push(`capture triggers on ${relLabel(t)}`);
    }
    if ((await c.query(`SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'pgferry'`)).rows.length) {
      await c.query('DROP SCHEMA pgferry CASCADE');
      removed.push('schema pgferry (change log, ticks, capture functions)');
    }
    await c.query('COMMIT');
    return removed;
  });
}
