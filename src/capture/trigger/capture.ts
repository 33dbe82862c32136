/**
 * Trigger capture: read pgferry.events batch by batch, in commit order, and
 * publish each transaction in the same envelope as WAL capture.
 *
 * A batch is delimited by two ticks (snapshots): it holds the transactions
 * that became visible between them. Transactions get the position
 * `<tick>/<rank>` (a pg_lsn-shaped number that only grows), so replicas skip
 * re-sent ones exactly as in WAL mode. A batch's events are deleted, and
 * capture's tick advanced, only after RabbitMQ confirmed every message of it;
 * re-reading an unconfirmed batch yields the same positions.
 */
import { schemaCaptureKey } from '../schema-capture';
import type pg from 'pg';
import type { TxnMessage } from '../../change';
import { CHUNK_BYTES, TxnChunker, gapMarker } from '../../changelog/envelope';
import { SourceError, UnavailableError } from '../../errors';
import { formatLsn, parseLsn } from '../../lsn';
import { retainedRange, StreamPublisher } from '../../changelog/stream';
import { RunPublisher } from '../../changelog/runs';
import { connectRabbit } from '../../changelog/rabbit';
import { connectPg } from '../../pg';
import { QueuedEvent, TriggerEvents } from './events';
import type { CaptureOptions, CaptureProgress } from '../contract';
import { TICK_LOCK } from './install';
import { triggerHistory } from '../history';
import { streamLossWarning } from '../prepare';
import { Heartbeat } from '../../heartbeat';

/**
 * The transactions of one batch: those visible in tick $2's snapshot and not
 * in tick $1's, in commit order as far as it matters — by their last event:
 * of two transactions writing the same row, the later writer waited for the
 * earlier one to commit, so its last event comes after all of the earlier's.
 */
const BATCH_TXNS = `
SELECT e.txid::text AS txid, max(e.ev_id)::text AS last_ev, count(*)::int AS events,
       to_char(max(e.at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS commit_time
FROM pgferry.events e, pgferry.ticks prev, pgferry.ticks next
WHERE prev.tick_id = $1 AND next.tick_id = $2
  AND pg_catalog.pg_visible_in_snapshot(e.txid, next.snap) AND NOT pg_catalog.pg_visible_in_snapshot(e.txid, prev.snap)
GROUP BY e.txid
ORDER BY max(e.ev_id)`;

interface BatchTxnRow {
  txid: string;
  last_ev: string;
  /** Number of events (text on pgferry's connections). */
  events: string | number;
  commit_time: string;
}

/**
 * A batch is confirmed by RabbitMQ: forget its events and the ticks before
 * it, and record how far capture got — one transaction.
 */
const BATCH_DONE = `
WITH gone AS (
  DELETE FROM pgferry.events e USING pgferry.ticks prev, pgferry.ticks next
  WHERE prev.tick_id = $2 AND next.tick_id = $3
    AND pg_catalog.pg_visible_in_snapshot(e.txid, next.snap) AND NOT pg_catalog.pg_visible_in_snapshot(e.txid, prev.snap)
  RETURNING 1
), state AS (
  UPDATE pgferry.capture_state SET last_tick = $3 WHERE source = $1 RETURNING 1
)
SELECT (SELECT count(*) FROM gone)::int AS deleted, (SELECT count(*) FROM state)::int AS updated`;

export async function captureTriggers(opts: CaptureOptions): Promise<CaptureProgress> {
  const { source, url, log } = opts;
  const what = `source '${source}'`;
  const c = await connectPg(what, url);
  const listener = await connectPg(what, url);
  let publisher: StreamPublisher | undefined;
  let runs: RunPublisher | undefined;
  let wake: () => void = () => undefined;
  let report: Heartbeat<CaptureProgress> | undefined;
  listener.on('notification', () => wake());
  try {
    await holdCaptureLock(c, source);
    await listener.query('LISTEN pgferry');
    const state = (await c.query(`SELECT to_regclass('pgferry.capture_state') IS NOT NULL AS installed`)).rows[0];
    const last = state.installed === true || state.installed === 't' ? (await c.query('SELECT last_tick, incarnation FROM pgferry.capture_state WHERE source = $1', [source])).rows[0] : null;
    if (!last) {
      throw new SourceError(`${what}: trigger capture is not installed for this source; run pgferry init --mode trigger (or pgferry up --mode trigger)`);
    }
    let lastTick = BigInt(last.last_tick);
    const schemaKey = await schemaCaptureKey(c);
    publisher = await StreamPublisher.connect(opts.rabbitUrl, source, opts.retention);
    // A tick's transactions travel as runs of whole transactions while RabbitMQ confirms earlier messages (changelog/runs.ts).
    runs = new RunPublisher(publisher, opts.runs);
    if (publisher.created) log.warn({ source, stream: publisher.stream }, streamLossWarning(source, publisher.stream));
    const history = await checkNotBehind(c, opts, publisher, triggerHistory(last.incarnation));

    const progress: CaptureProgress = { confirmedLsn: formatLsn(lastTick << 32n), txns: 0, changes: 0, messages: 0, startedAt: new Date().toISOString() };
    let log_: { logEvents?: number; logBytes?: number } = {};
    // Heartbeats (live position, change-log size) even while idle: Temporal tells a live capture by them.
    report = new Heartbeat(opts.onProgress, { everyMs: 2000, details: () => ({ ...progress, ...log_ }) }).start();
    const started = Date.now();
    const stopAt = started + opts.maxRunMs;

    while (!opts.signal.aborted && Date.now() < stopAt) {
      const next = await nextTick(c, lastTick);
      if (next === null) {
        await waitForWake(1000, opts.signal, (f) => (wake = f));
        continue;
      }
      const txns = (await c.query<BatchTxnRow>(BATCH_TXNS, [String(lastTick), String(next)])).rows;
      const events = new TriggerEvents(c, source, lastTick, schemaKey); // table definitions and shapes are read again for every batch
      let rank = 0n;
      for (const t of txns) {
        rank += 1n;
        const lsn = formatLsn((next << 32n) | rank);
        const chunker = new TxnChunker(
          { source, xid: Number(t.txid), lsn, commitTime: t.commit_time, history },
          { changes: opts.chunkChanges, bytes: opts.chunkBytes ?? CHUNK_BYTES, maxMessageBytes: opts.maxMessageBytes },
          (key) => events.info(key),
        );
        const publish = async (m: TxnMessage | null) => {
          if (!m) return;
          await runs!.publish(m, () => undefined);
          progress.messages += 1;
          progress.changes += m.changes.length;
        };
        let after = '0';
        let read = 0;
        while (read < Number(t.events)) {
          const { rows } = await c.query(
            // ORDER BY e.ev_id, the column: a bare `ev_id` would name the text output column and order
            // 99 after 100 (events out of order, and pages that skip events).
            'SELECT e.ev_id::text AS ev_id, e.op, e.rel_schema, e.rel_table, e.rel_oid::text AS rel_oid, e.shape, e.old_row, e.new_row FROM pgferry.events e WHERE e.txid = $1::xid8 AND e.ev_id > $2::bigint ORDER BY e.ev_id LIMIT $3',
            [t.txid, after, opts.chunkChanges],
          );
          if (!rows.length) break;
          read += rows.length;
          after = rows[rows.length - 1].ev_id;
          for (const e of rows as QueuedEvent[]) {
            if (e.shape !== null) e.shape = Number(e.shape);
            await publish(chunker.add(await events.change(e)));
          }
        }
        await publish(chunker.end(lsn));
        progress.txns += 1;
        progress.lastLsn = lsn;
        progress.lastCommitTime = t.commit_time;
      }
      await runs!.flush(); // the run held, then
      await publisher.flush(); // every message of the batch confirmed: now, and only now, forget it
      await c.query('BEGIN');
      await c.query(BATCH_DONE, [source, String(lastTick), String(next)]);
      await c.query('DELETE FROM pgferry.ticks WHERE tick_id < (SELECT min(last_tick) FROM pgferry.capture_state)');
      await c.query('COMMIT');
      lastTick = next;
      progress.confirmedLsn = formatLsn((next << 32n) | rank);
      const size = (await c.query(`SELECT count(*)::int AS n, pg_catalog.pg_total_relation_size('pgferry.events')::bigint AS b FROM pgferry.events`)).rows[0];
      log_ = { logEvents: Number(size.n), logBytes: Number(size.b) };
      report.beat(true); // the new position at once
      if (!txns.length) await waitForWake(200, opts.signal, (f) => (wake = f)); // only transactions still in progress: let them finish
    }
    log.info({ source, txns: progress.txns }, 'trigger capture run ended');
    return progress;
  } finally {
    report?.stop();
    await publisher?.close();
    await listener.end().catch(() => undefined);
    await c.end().catch(() => undefined);
  }
}

/**
 * One trigger capture per source at a time, as the slot ensures in WAL mode:
 * a zombie attempt, or a second `up` against another Temporal server, would
 * interleave its chunks with this one's. The lock is the session's, held
 * until its connection ends.
 */
async function holdCaptureLock(c: pg.ClientBase, source: string): Promise<void> {
  const got = (await c.query('SELECT pg_catalog.pg_try_advisory_lock($1, pg_catalog.hashtext($2)) AS ok', [CAPTURE_LOCK, source])).rows[0].ok;
  if (got === true || got === 't') return;
  const holder = (
    await c.query(
      `SELECT l.pid, a.application_name, a.client_addr::text AS addr FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a USING (pid)
        WHERE l.locktype = 'advisory' AND l.classid = $1::int::oid AND l.objid = pg_catalog.hashtext($2)::oid AND l.objsubid = 2 AND l.granted`,
      [CAPTURE_LOCK, source],
    )
  ).rows[0];
  const who = holder ? `backend pid ${holder.pid}${holder.addr ? ` from ${holder.addr}` : ''}${holder.application_name ? ` (${holder.application_name})` : ''}` : 'another session';
  throw new UnavailableError(
    `source '${source}': another trigger capture of this source is running (${who} holds its capture lock); this one waits and retries — ` +
      `if that is a pgferry left running elsewhere (another Temporal server?), stop it`,
  );
}

/**
 * A source restored from a dump (or a backup) keeps its install id but is
 * behind its own change log: the stream already holds positions its ticks
 * have not reached, and the ticks it makes next would repeat them with other
 * transactions. Capture notices at start: the source is given a new history
 * (install id), a gap marker says why, and every consumer stops there for a
 * resync instead of skipping the new transactions as "already applied".
 */
async function checkNotBehind(c: pg.ClientBase, opts: CaptureOptions, publisher: StreamPublisher, history: string): Promise<string> {
  const rabbit = await connectRabbit(opts.rabbitUrl);
  let newest: { lsn: string; history?: string } | null;
  try {
    newest = (await retainedRange(rabbit, opts.source)).last;
  } finally {
    await rabbit.close().catch(() => undefined);
  }
  if (!newest || (newest.history && newest.history !== history)) return history;
  const top = BigInt((await c.query('SELECT coalesce(max(tick_id), 0)::text AS t FROM pgferry.ticks')).rows[0].t);
  const reach = (top << 32n) | 0xffffffffn; // the highest position the source's ticks can have given
  if (parseLsn(newest.lsn) <= reach) return history;
  const id = (await c.query('UPDATE pgferry.capture_state SET incarnation = pg_catalog.gen_random_uuid()::text WHERE source = $1 RETURNING incarnation', [opts.source])).rows[0].incarnation;
  const next = triggerHistory(id);
  const reason =
    `source '${opts.source}' is behind its change log (the stream holds position ${newest.lsn}, the source's ticks reach ${formatLsn(reach)}): ` +
    `it was restored from a dump or backup, so changes after that point are in no log; capture continues as a new history`;
  await publisher.publish(gapMarker({ source: opts.source, lsn: formatLsn(top << 32n), reason, history: next }), () => undefined);
  await publisher.flush();
  opts.log.warn({ source: opts.source }, `${reason}; every replica will stop in state needs_resync there: run pgferry replica resync <name> for each`);
  return next;
}

/** pg_advisory_lock class for "a trigger capture of this source runs" (second key: hashtext of the source name). */
const CAPTURE_LOCK = 7_364_202;

/** The tick after `last`, creating one if events wait and no tick is there yet; null when there is nothing to do. */
async function nextTick(c: pg.ClientBase, last: bigint): Promise<bigint | null> {
  const existing = (await c.query('SELECT t.tick_id::text AS tick_id FROM pgferry.ticks t WHERE t.tick_id > $1 ORDER BY t.tick_id LIMIT 1', [String(last)])).rows[0];
  if (existing) return BigInt(existing.tick_id);
  if (!(await c.query('SELECT EXISTS (SELECT 1 FROM pgferry.events) AS e')).rows[0].e.toString().startsWith('t')) return null;
  await c.query('BEGIN');
  try {
    // Serialized with the snapshot tick of `replica add`: tick ids must follow snapshot order.
    await c.query(`SELECT pg_catalog.pg_advisory_xact_lock(${TICK_LOCK})`);
    await c.query('INSERT INTO pgferry.ticks (snap) VALUES (pg_catalog.pg_current_snapshot())');
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
  // Not necessarily the tick just made: a snapshot tick of `replica add` may have been recorded while we
  // waited for the lock, and every tick must bound a batch of its own.
  const first = (await c.query('SELECT t.tick_id::text AS tick_id FROM pgferry.ticks t WHERE t.tick_id > $1 ORDER BY t.tick_id LIMIT 1', [String(last)])).rows[0];
  return BigInt(first.tick_id);
}

function waitForWake(ms: number, signal: AbortSignal | undefined, set: (f: () => void) => void): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      set(() => undefined);
      resolve();
    }
    set(done);
    signal?.addEventListener('abort', done);
  });
}
