/**
 * The source history a capture's positions belong to, stamped on every
 * message (see log/protocol.ts). Positions only compare within one history;
 * a consumer that meets another one stops for a resync instead of taking
 * "lower position" for "already applied".
 *
 * - WAL mode: `pg:<system identifier>:<timeline>:<database oid>`, from
 *   IDENTIFY_SYSTEM on a replication connection (the capture role has
 *   REPLICATION). A source re-created (initdb), restored into another
 *   cluster or database, recovered to a point in time or failed over to a
 *   standby is a new history; a slot dropped and created anew on the same
 *   server is not (its positions keep growing; the gap marker says what is
 *   missing).
 * - Trigger mode: `trigger:<install id>`, a random id pgferry.capture_state
 *   gets when trigger capture is installed for the source: uninstall and
 *   install again is a new history (ticks start at 1 again). A source
 *   restored from a dump keeps the id but is behind its stream: trigger
 *   capture notices and starts a new history itself (trigger-capture.ts).
 */
import type pg from 'pg';
import { connectPg } from '../pg';

export async function walHistory(what: string, url: string): Promise<string> {
  const c = await connectPg(what, url, { replication: 'database' } as Partial<pg.ClientConfig>);
  try {
    const id = (await c.query('IDENTIFY_SYSTEM')).rows[0];
    const db = (await c.query('SELECT oid::text AS oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()')).rows[0];
    return `pg:${id.systemid}:${id.timeline}:${db.oid}`;
  } finally {
    await c.end().catch(() => undefined);
  }
}

export const triggerHistory = (installId: string) => `trigger:${installId}`;
