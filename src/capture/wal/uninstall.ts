/** Removing WAL capture from a source: the replication slot (a forgotten slot pins WAL forever) and the publication. */
import type pg from 'pg';
import { SourceError } from '../../errors';
import { publicationName, slotName } from '../../names';
import { ident } from '../../pg';
import { readSlot } from './prepare';
import { uninstallSchemaCapture } from '../schema-capture';

export async function uninstallWal(c: pg.ClientBase, source: string): Promise<string[]> {
  const removed: string[] = [];
  const slot = slotName(source);
  const s = await readSlot(c, slot);
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
  removed.push(...(await uninstallSchemaCapture(c)));
  return removed;
}
