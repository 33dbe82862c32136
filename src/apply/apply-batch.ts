import type pg from 'pg';
import type { ChannelModel } from 'amqplib';
import { Change, RelationInfo, TxnMessage, decodeTxn, relLabel } from '../change';
import { RejectedChangeError, SchemaMismatchError, isTransientSqlState } from '../errors';
import { compareLsn, ZERO_LSN } from '../lsn';
import { StreamReader } from '../log/stream';
import { loadSql } from '../sql';
import { Statement, buildDelete, buildInsert, buildTruncate, buildUpdate, describeKey } from './sql-builder';
import type { Logger } from '../logger';

/**
 * One apply batch for one replica, in ONE replica transaction:
 *   lock pgferry.progress → read the stream from the stored offset → apply
 *   every transaction whose commit LSN is above the stored one, in order →
 *   write the new position and offset → COMMIT.
 * Data and checkpoint commit together, so a crash anywhere means "nothing of
 * this batch happened" and the next attempt starts from the stored position.
 * A source transaction is never split: the batch only ends on a transaction
 * boundary, and a transaction whose chunks stop arriving is rolled back to its
 * savepoint and left for the next batch.
 */
export interface ApplyBatchOptions {
  replica: string;
  source: string;
  client: pg.ClientBase;
  rabbit: ChannelModel;
  /** Stop at the first transaction boundary after this many changes. */
  maxChanges: number;
  /** Wait this long for the first message, and stop at a boundary after this long. */
  maxWaitMs: number;
  /** Once something arrived, stop when nothing more arrives for this long. */
  idleMs?: number;
  /** How long to wait for the next chunk of a started transaction before leaving it for later. */
  chunkWaitMs?: number;
  heartbeat: () => void;
  log: Logger;
}

export interface BatchResult {
  appliedLsn: string;
  /** Stream offset of the last message consumed (null: nothing ever consumed). */
  offset: number | null;
  txns: number;
  changes: number;
  /** Commit time of the last transaction applied in this batch. */
  lastCommitTime: string | null;
  /** The batch ended because the stream had nothing more. */
  caughtUp: boolean;
  /** Messages skipped because their transaction was already applied. */
  skipped: number;
}

export async function applyBatch(o: ApplyBatchOptions): Promise<BatchResult> {
  try {
    return await runBatch(o);
  } catch (err) {
    const at = (err as { sourceLsn?: string }).sourceLsn;
    if (!at) throw err;
    // A rejected change: keep every transaction before it (apply the batch again, stopping
    // just before the rejected transaction), then report it.
    const before = await runBatch(o, at);
    o.log.info({ replica: o.replica, appliedLsn: before.appliedLsn, txns: before.txns }, 'applied what came before the rejected transaction');
    throw err;
  }
}

async function runBatch(o: ApplyBatchOptions, stopBefore?: string): Promise<BatchResult> {
  const c = o.client;
  const idleMs = o.idleMs ?? 100;
  const chunkWaitMs = o.chunkWaitMs ?? 30_000;
  await c.query('BEGIN');
  let reader: StreamReader | undefined;
  try {
    await c.query(loadSql('target/progress-init.sql'), [o.replica, o.source]);
    const row = (await c.query(loadSql('target/progress-lock.sql'), [o.replica])).rows[0];
    const storedLsn: string = row.lsn ?? ZERO_LSN;
    const storedOffset: number | null = row.stream_offset === null ? null : Number(row.stream_offset);

    reader = await StreamReader.open(o.rabbit, o.source, storedOffset === null ? 'first' : storedOffset + 1);
    const result: BatchResult = {
      appliedLsn: storedLsn,
      offset: storedOffset,
      txns: 0,
      changes: 0,
      lastCommitTime: null,
      caughtUp: false,
      skipped: 0,
    };
    const started = Date.now();
    const heartbeat = throttled(o.heartbeat);
    let open: { lsn: string; nextSeq: number; savepoint: boolean; changes: number } | null = null;
    let received = 0;

    for (;;) {
      const full = result.changes >= o.maxChanges || Date.now() - started >= o.maxWaitMs;
      if (!open && full) break;
      const wait = open ? chunkWaitMs : received ? idleMs : Math.max(0, o.maxWaitMs - (Date.now() - started));
      const msg = await nextBeating(reader, wait, heartbeat);
      if (!msg) {
        if (open) {
          // The rest of this transaction has not been published (capture restarted mid-transaction
          // and will re-send it whole). Undo its part; the next batch reads it again.
          if (open.savepoint) await c.query('ROLLBACK TO SAVEPOINT pgferry_txn');
          o.log.info({ replica: o.replica, lsn: open.lsn }, 'transaction incomplete in the stream; left for the next batch');
          open = null;
        } else {
          result.caughtUp = true;
        }
        break;
      }
      received += 1;
      const m = decodeTxn(msg.body);
      if (stopBefore && !open && compareLsn(m.lsn, stopBefore) >= 0) break;

      if (open && (m.lsn !== open.lsn || m.seq === 0)) {
        // A transaction restarted from its first chunk (re-sent by capture after a restart), or an
        // abandoned partial one: discard what we applied of it and start over.
        if (open.savepoint) await c.query('ROLLBACK TO SAVEPOINT pgferry_txn');
        open = null;
      }
      if (compareLsn(m.lsn, result.appliedLsn) <= 0) {
        // Already applied (a re-send after a capture restart, or a redelivery): skip.
        result.skipped += 1;
        if (!open) result.offset = msg.offset;
        continue;
      }
      if (!open && m.seq !== 0) {
        // A stray later chunk of a transaction whose start we never saw: it is re-sent whole later.
        result.offset = msg.offset;
        continue;
      }
      if (open && m.seq !== open.nextSeq) {
        throw new Error(`stream of source '${o.source}': transaction ${m.lsn} chunk ${m.seq} arrived, expected ${open.nextSeq}`);
      }
      if (!open) {
        open = { lsn: m.lsn, nextSeq: 0, savepoint: !m.last, changes: 0 };
        if (open.savepoint) await c.query('SAVEPOINT pgferry_txn');
      }
      await applyChanges(c, o.replica, m);
      open.nextSeq += 1;
      open.changes += m.changes.length;
      if (m.last) {
        if (open.savepoint) await c.query('RELEASE SAVEPOINT pgferry_txn');
        result.appliedLsn = m.lsn;
        result.offset = msg.offset;
        result.txns += 1;
        result.changes += open.changes;
        result.lastCommitTime = m.commitTime;
        open = null;
      }
    }

    if (result.offset !== storedOffset || result.appliedLsn !== storedLsn) {
      await c.query(loadSql('target/progress-update.sql'), [
        o.replica,
        result.appliedLsn,
        result.offset,
        result.txns,
        result.changes,
        result.lastCommitTime,
      ]);
    }
    await c.query('COMMIT');
    return result;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    await reader?.close();
  }
}

/**
 * Heartbeat at most once a second, however the time is spent (waiting for
 * messages or applying a long run of chunks), so Temporal can tell a live
 * batch from a dead worker.
 */
function throttled(beat: () => void): () => void {
  let last = Date.now();
  return () => {
    if (Date.now() - last < 1000) return;
    last = Date.now();
    beat();
  };
}

/** Wait for the next message in slices of at most a second, heartbeating between them. */
async function nextBeating(reader: StreamReader, waitMs: number, heartbeat: () => void) {
  const until = Date.now() + waitMs;
  for (;;) {
    const msg = await reader.next(Math.min(1000, Math.max(0, until - Date.now())));
    heartbeat();
    if (msg || Date.now() >= until) return msg;
  }
}

async function applyChanges(c: pg.ClientBase, replica: string, m: TxnMessage): Promise<void> {
  for (const change of m.changes) {
    const st = statementFor(m, change);
    if (!st) continue;
    try {
      await c.query(st);
    } catch (err) {
      throw rejection(replica, m, change, err);
    }
  }
}

function rel(m: TxnMessage, key: string): RelationInfo {
  const r = m.relations[key];
  if (!r) throw new Error(`change-log message ${m.lsn}#${m.seq} references relation ${key} without describing it`);
  return r;
}

function statementFor(m: TxnMessage, ch: Change): Statement | null {
  switch (ch.op) {
    case 'insert':
      return buildInsert(rel(m, ch.rel), ch.new);
    case 'update':
      return buildUpdate(rel(m, ch.rel), ch.old, ch.new);
    case 'delete':
      return buildDelete(rel(m, ch.rel), ch.old);
    case 'truncate':
      return buildTruncate(
        ch.rels.map((k) => rel(m, k)),
        ch.cascade,
        ch.restartIdentity,
      );
  }
}

/**
 * A change the replica refused. Connection-level problems are re-thrown to be
 * retried; anything about the data or the schema stops this replica with the
 * table, the key, the source position and the database's own message.
 */
function rejection(replica: string, m: TxnMessage, ch: Change, err: unknown): Error {
  const e = err as { code?: string; message?: string };
  if (isTransientSqlState(e?.code) || !e?.code) return err as Error;
  const r = ch.op === 'truncate' ? m.relations[ch.rels[0]] : m.relations[ch.rel];
  const table = r ? relLabel(r) : 'unknown table';
  const key = ch.op === 'truncate' ? '' : ` key ${describeKey(r, ch.op === 'insert' ? ch.new : ch.old)}`;
  const where = `replica '${replica}': ${ch.op} on ${table}${key} at source position ${m.lsn} was rejected: ${e.message} [${e.code}]`;
  const rejected =
    e.code === '42P01' || e.code === '42703' || e.code === '42804'
      ? new SchemaMismatchError(`${where}; make the replica's table match the source's, then run pgferry replica resume ${replica}`, { cause: err })
      : new RejectedChangeError(`${where}; fix the replica (or the row), then run pgferry replica resume ${replica}`, { cause: err });
  return Object.assign(rejected, { sourceLsn: m.lsn });
}
