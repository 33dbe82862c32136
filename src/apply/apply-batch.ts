import type pg from 'pg';
import type { ChannelModel } from 'amqplib';
import { Change, RelationInfo, TxnMessage, relLabel } from '../change';
import { ConfigError, RejectedChangeError, SchemaMismatchError, isRefusal, isSchemaMismatch } from '../errors';
import { ZERO_LSN } from '../lsn';
import { decodeTxn } from '../log/envelope';
import { LogPosition, LogProtocol } from '../log/protocol';
import { StreamReader } from '../log/stream';
import { loadSql } from '../sql';
import { ParamRef, Statement, arrayRefs, buildDelete, buildInsert, buildTruncate, buildUpdate, describeKey, positional } from './sql-builder';
import { applyRun, forgetReplicaTypes, prepared, refreshReplicaTypes, replicaTypes, runLength } from './set-apply';
import { StatementGroup } from './statement-group';
import type { Logger } from '../logger';
import { crashPoint } from '../testing/crash-point';

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
  /** Apply only changes of these tables ("schema.table"); all when undefined. */
  tables?: ReadonlySet<string>;
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
    if (!(err instanceof StopAt)) throw err;
    // A rejected change, a gap or a break in the log: keep every transaction before it (apply the
    // batch again, stopping at the stream offset where its transaction began), then report it.
    const before = await runBatch(o, err.offset);
    o.log.info({ replica: o.replica, appliedLsn: before.appliedLsn, txns: before.txns }, 'applied what came before the stop');
    throw err.error;
  }
}

/** The batch must stop where a transaction that cannot be applied begins (`offset`), with `error`. */
class StopAt extends Error {
  constructor(
    readonly offset: number,
    readonly error: Error,
  ) {
    super(error.message);
  }
}

async function runBatch(o: ApplyBatchOptions, stopAt?: number): Promise<BatchResult> {
  const c = o.client;
  const idleMs = o.idleMs ?? 100;
  const chunkWaitMs = o.chunkWaitMs ?? 30_000;
  await c.query('BEGIN');
  let reader: StreamReader | undefined;
  // Heartbeat however the time is spent — also while a statement waits on the replica — so Temporal
  // tells a live batch from a dead worker and does not start a second attempt beside this one.
  const beating = setInterval(() => o.heartbeat(), 2000);
  try {
    await c.query(loadSql('target/progress-init.sql'), [o.replica, o.source]);
    const row = (await c.query(loadSql('target/progress-lock.sql'), [o.replica])).rows[0];
    if (row.source !== o.source) {
      throw new ConfigError(
        `replica '${o.replica}' holds the position of source '${row.source}' (pgferry.progress), but is configured for source '${o.source}': ` +
          `its position says nothing about the new source's log; point it back at '${row.source}', or run pgferry replica resync ${o.replica} to rebuild it from '${o.source}'`,
      );
    }
    const stored: LogPosition = {
      lsn: row.lsn ?? ZERO_LSN,
      offset: row.stream_offset === null ? null : Number(row.stream_offset),
      history: row.history ?? null,
    };
    const fix = `run pgferry replica resync ${o.replica} to rebuild it from a snapshot`;
    const protocol = new LogProtocol(
      {
        who: `replica '${o.replica}'`,
        noun: 'replica',
        did: 'applied',
        source: o.source,
        fix,
        // If retention removed the last consumed message, later ones may be gone too: a replica idle for a whole
        // retention span is resynced rather than trusted.
        retentionHint: ' (and raise the stream retention if replicas stay paused this long)',
        needsLogStart: true,
      },
      stored,
    );

    // Read from the last message consumed (not the one after it): the protocol checks that the stream
    // still holds it. A replica that never consumed anything needs the stream from its very beginning.
    // Prefetch 256 messages: RabbitMQ delivers a credit's worth per round trip, so a stream of small
    // transactions is read ~4x faster than with 64 (measured in W3); chunks of at most ~128 kB
    // (envelope CHUNK_BYTES) keep that within tens of MB for huge transactions.
    reader = await StreamReader.open(o.rabbit, o.source, stored.offset ?? 'first', 256);
    const result: BatchResult = {
      appliedLsn: stored.lsn,
      offset: stored.offset,
      txns: 0,
      changes: 0,
      lastCommitTime: null,
      caughtUp: false,
      skipped: 0,
    };
    const started = Date.now();
    const heartbeat = throttled(o.heartbeat);
    // Single-row changes of consecutive transactions travel together; the group is always sent
    // before anything that depends on what it holds (a savepoint, a run, the progress row).
    refreshReplicaTypes(c); // the replica's tables may have been altered since the last batch
    const group = new StatementGroup(c, (m, ch) => applyOne(c, o.replica, m, ch), o.log);
    /** The transaction being applied, and whether it has a savepoint (several chunks). */
    let open: { lsn: string; savepoint: boolean; changes: number } | null = null;
    const discardOpen = async () => {
      if (open?.savepoint) await c.query('ROLLBACK TO SAVEPOINT pgferry_txn');
      open = null;
    };
    let received = 0;
    /** Where each transaction applied in this batch began in the stream: a refused one is stopped at. */
    const starts = new Map<string, number>();
    try {
      for (;;) {
        const full = result.changes >= o.maxChanges || Date.now() - started >= o.maxWaitMs;
        if (!open && full) break;
        const wait = open ? chunkWaitMs : received ? idleMs : Math.max(0, o.maxWaitMs - (Date.now() - started));
        const msg = await nextBeating(reader, wait, heartbeat);
        if (!msg) {
          if (open) {
            // The rest of this transaction has not been published (capture restarted mid-transaction
            // and will re-send it whole). Undo its part; the next batch reads it again.
            o.log.info({ replica: o.replica, lsn: protocol.abandon() }, 'transaction incomplete in the stream; left for the next batch');
            await discardOpen();
          } else {
            result.caughtUp = true;
          }
          break;
        }
        if (stopAt !== undefined && msg.offset >= stopAt) {
          protocol.abandon();
          await discardOpen();
          break;
        }
        let decoded: TxnMessage | undefined;
        const step = protocol.step({ offset: msg.offset, lsn: msg.lsn, read: () => (decoded ??= decodeTxn(msg.body)) });
        if (step.discard) {
          // Sent again from its first chunk (capture restarted), or cut short: undo what we applied of it.
          o.log.info({ replica: o.replica, lsn: step.discard, offset: msg.offset }, 'transaction sent again in the stream; what was applied of it is undone');
          await discardOpen();
        }
        if (step.kind === 'skip') {
          result.skipped += 1;
          continue;
        }
        if (step.kind !== 'chunk') throw new StopAt(msg.offset, step.error);
        received += 1;
        const m = step.m;
        if (!open) {
          open = { lsn: m.lsn, savepoint: !m.last, changes: 0 };
          if (open.savepoint) {
            // Defect A: what is queued belongs to earlier, finished transactions; it goes to the replica
            // before the savepoint, or rolling back to it (a re-send, a chunk that never came) undoes it too.
            await group.flush();
            await c.query('SAVEPOINT pgferry_txn');
          }
        }
        if (m.seq === 0) starts.set(m.lsn, msg.offset);
        await applyChanges(c, o.replica, o.tables ? onlyTables(m, o.tables) : m, group);
        // A transaction in several chunks may be rolled back to its savepoint: keep nothing of it queued.
        if (open.savepoint) await group.flush();
        open.changes += m.changes.length;
        if (m.last) {
          if (open.savepoint) await c.query('RELEASE SAVEPOINT pgferry_txn');
          result.txns += 1;
          result.changes += open.changes;
          result.lastCommitTime = m.commitTime;
          open = null;
        }
      }

      await group.flush();
    } catch (err) {
      const lsn = err instanceof RejectedChangeError || err instanceof SchemaMismatchError ? err.sourceLsn : undefined;
      const offset = lsn === undefined ? undefined : starts.get(lsn);
      throw offset === undefined ? err : new StopAt(offset, err as Error);
    }
    const at = protocol.position;
    result.appliedLsn = at.lsn;
    result.offset = at.offset;
    if (result.offset !== stored.offset || result.appliedLsn !== stored.lsn || (at.history ?? null) !== stored.history) {
      await c.query(loadSql('target/progress-update.sql'), [
        o.replica,
        result.appliedLsn,
        result.offset,
        result.txns,
        result.changes,
        result.lastCommitTime,
        at.history ?? null,
      ]);
    }
    await c.query('COMMIT').catch((err) => {
      throw commitRefused(o.replica, stored.lsn, result.appliedLsn, err);
    });
    if (result.txns > 0) crashPoint('apply-after-commit'); // test-only (PGFERRY_TEST_CRASH_AT): committed, activity not returned
    return result;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    clearInterval(beating);
    await reader?.close();
  }
}

/**
 * COMMIT refused (a deferred constraint or constraint trigger on the
 * replica): nothing of the batch is applied and retrying gives the same
 * answer, so the replica stops, naming the range of source positions.
 */
function commitRefused(replica: string, from: string, to: string, err: unknown): Error {
  const e = err as { code?: string; message?: string };
  if (!isRefusal(err)) return err as Error;
  return new RejectedChangeError(
    `replica '${replica}': the replica refused to commit the source transactions after ${from} up to ${to} (a deferred constraint or trigger): ${e.message} [${e.code}]; ` +
      `nothing of them was applied; fix the replica, then run pgferry replica resume ${replica}`,
    { cause: err },
  );
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

/** The transaction with only the changes of the replica's tables (a TRUNCATE keeps the tables it names that are among them). */
export function onlyTables(m: TxnMessage, tables: ReadonlySet<string>): TxnMessage {
  const wanted = (key: string) => {
    const r = m.relations[key];
    return r !== undefined && tables.has(`${r.schema}.${r.table}`);
  };
  const changes: Change[] = [];
  for (const ch of m.changes) {
    if (ch.op !== 'truncate') {
      if (wanted(ch.rel)) changes.push(ch);
    } else {
      const rels = ch.rels.filter(wanted);
      if (rels.length) changes.push({ ...ch, rels });
    }
  }
  return changes.length === m.changes.length ? m : { ...m, changes };
}

async function applyChanges(c: pg.ClientBase, replica: string, m: TxnMessage, group: StatementGroup): Promise<void> {
  const changes = m.changes;
  const applier = { one: (ch: Change) => applyOne(c, replica, m, ch) };
  for (let i = 0; i < changes.length; ) {
    const run = runLength(m, changes, i);
    const ch = changes[i];
    if (run > 1 || ch.op === 'truncate') {
      await group.flush();
      if (run > 1) await applyRun(c, m, changes.slice(i, i + run), applier);
      else await applyOne(c, replica, m, ch);
    } else {
      const r = rel(m, ch.rel);
      const ref = arrayRefs(
        r.columns.map((col) => col.name),
        await replicaTypes(c, r, ch.rel),
      );
      const st = ref && statementFor(m, ch, ref);
      if (st) await group.add(m, ch, st);
      else if (!ref) {
        await group.flush();
        await applyOne(c, replica, m, ch);
      }
    }
    i += run;
  }
}

async function applyOne(c: pg.ClientBase, replica: string, m: TxnMessage, change: Change): Promise<void> {
  const st = statementFor(m, change, positional);
  if (!st) return;
  try {
    await c.query(change.op === 'truncate' ? st : await prepared(c, rel(m, change.rel), st));
  } catch (err) {
    if (change.op !== 'truncate') forgetReplicaTypes(c, rel(m, change.rel));
    throw rejection(replica, m, change, err);
  }
}

function rel(m: TxnMessage, key: string): RelationInfo {
  const r = m.relations[key];
  if (!r) throw new Error(`change-log message ${m.lsn}#${m.seq} references relation ${key} without describing it`);
  return r;
}

function statementFor(m: TxnMessage, ch: Change, ref: ParamRef): Statement | null {
  switch (ch.op) {
    case 'insert':
      return buildInsert(rel(m, ch.rel), ch.new, ref);
    case 'update':
      return buildUpdate(rel(m, ch.rel), ch.old, ch.new, ref);
    case 'delete':
      return buildDelete(rel(m, ch.rel), ch.old, ref);
    case 'truncate':
      return buildTruncate(
        ch.rels.map((k) => rel(m, k)),
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
  if (!isRefusal(err)) return err as Error;
  const r = ch.op === 'truncate' ? m.relations[ch.rels[0]] : m.relations[ch.rel];
  const table = r ? relLabel(r) : 'unknown table';
  const key = ch.op === 'truncate' ? '' : ` key ${describeKey(r, ch.op === 'insert' ? ch.new : ch.old)}`;
  const where = `replica '${replica}': ${ch.op} on ${table}${key} at source position ${m.lsn} was rejected: ${e.message} [${e.code}]`;
  const rejected =
    isSchemaMismatch(err)
      ? new SchemaMismatchError(`${where}; make the replica's table match the source's, then run pgferry replica resume ${replica}`, { cause: err, sourceLsn: m.lsn })
      : new RejectedChangeError(`${where}; fix the replica (or the row), then run pgferry replica resume ${replica}`, { cause: err, sourceLsn: m.lsn });
  return rejected;
}
