/**
 * Snapshots of a trigger-captured source. Trigger mode has no slot to give a
 * position, so a snapshot is made a batch boundary (a tick): see below.
 */
import { SourceError } from '../../errors';
import { connectPg } from '../../pg';
import { formatLsn } from '../../lsn';
import type pg from 'pg';
import type { ExportedSnapshot, SourcePoint } from '../contract';
import { TICK_LOCK } from './install';

/**
 * Trigger mode has no slot to give a position, so the snapshot is made a
 * batch boundary: with tick creation held off (the advisory lock capture
 * takes for each tick), the copy's transaction takes its snapshot S, and S
 * is recorded as the next tick. Every transaction visible in S then lies in
 * a batch up to that tick — positions up to <tick>/FFFFFFFF — and every
 * other one in a later batch.
 */
export async function exportTriggerSnapshot(url: string, source: string): Promise<ExportedSnapshot> {
  const what = `source '${source}'`;
  const lock = await connectPg(what, url);
  const copy = await connectPg(what, url);
  const close = async () => {
    await copy.end().catch(() => undefined);
    await lock.end().catch(() => undefined);
  };
  try {
    await lock.query(`SELECT pg_catalog.pg_advisory_lock(${TICK_LOCK})`);
    await copy.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const s = (await copy.query('SELECT pg_catalog.pg_current_snapshot()::text AS snap, pg_catalog.pg_export_snapshot() AS name')).rows[0];
    const tick = (await lock.query('INSERT INTO pgferry.ticks (snap) VALUES ($1::pg_snapshot) RETURNING tick_id::text', [s.snap])).rows[0].tick_id;
    await lock.query(`SELECT pg_catalog.pg_advisory_unlock(${TICK_LOCK})`);
    return { position: formatLsn((BigInt(tick) << 32n) | 0xffffffffn), name: s.name, close };
  } catch (err) {
    await close();
    const e = err as { message?: string };
    throw new SourceError(`${what}: cannot take a snapshot for trigger capture (${e.message}); is trigger capture installed (pgferry init --mode trigger)?`, { cause: err });
  }
}

/**
 * The source's snapshot now, and the position a consumer holding everything
 * in it has reached: a new tick of that very snapshot (made as capture makes
 * them, serialized with it), since trigger positions are <tick>/<rank>, not
 * LSNs: every transaction visible in the snapshot lies in a batch up to that
 * tick, at positions up to <tick>/FFFFFFFF (as for exportTriggerSnapshot). Not
 * <tick>/0: a consumer passes that with the tick's first transaction, while
 * the rest of the tick is still on its way.
 */
export async function triggerPoint(c: pg.ClientBase): Promise<SourcePoint> {
  await c.query('BEGIN');
  try {
    await c.query(`SELECT pg_catalog.pg_advisory_xact_lock(${TICK_LOCK})`);
    const t = (await c.query('INSERT INTO pgferry.ticks (snap) VALUES (pg_catalog.pg_current_snapshot()) RETURNING tick_id::text AS tick, snap::text AS snap')).rows[0];
    await c.query('COMMIT');
    return { snap: t.snap, lsn: formatLsn((BigInt(t.tick) << 32n) | 0xffffffffn) };
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/**
 * A transaction's events stay in pgferry.events until RabbitMQ has confirmed
 * the batch that carries it (capture.ts, BATCH_DONE): none left of the
 * transactions the point's snapshot shows means all of them are in the stream.
 */
export async function triggerCapturedThrough(c: pg.ClientBase, _source: string, point: SourcePoint): Promise<boolean> {
  const { rows } = await c.query<{ yes: boolean | string }>(
    'SELECT NOT EXISTS (SELECT 1 FROM pgferry.events e WHERE pg_catalog.pg_visible_in_snapshot(e.txid, $1::pg_snapshot)) AS yes',
    [point.snap],
  );
  return rows[0].yes === true || rows[0].yes === 't';
}
