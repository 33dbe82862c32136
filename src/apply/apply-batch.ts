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
 *
 * Framing only: how changes reach the replica is the applier's (applier.ts),
 * the checkpoint row is the ProgressStore's, the reading of the log is the
 * protocol's (log/protocol.ts).
 */
import { TableRegistry } from './table-registry';
import type { SchemaPolicy } from './schema-apply';
import type pg from 'pg';
import type { ChannelModel } from 'amqplib';
import type { TxnMessage } from '../change';
import { ConfigError, RejectedChangeError, SchemaMismatchError, UnavailableError, isRefusal } from '../errors';
import { within } from '../deadline';
import { streamName } from '../names';
import { LogMessage, LogPosition, LogProtocol } from '../changelog/protocol';
import { compareLsn } from '../lsn';
import { logMessageOf, readerBehind, StreamReader, streamTip } from '../changelog/stream';
import type { Logger } from '../logger';
import { Heartbeat } from '../heartbeat';
import { crashPoint } from '../testing/crash-point';
import { Applier } from './applier';
import { windowFor } from './net-apply';
import { PROGRESS_TABLE, ProgressStore } from './progress-store';

/** How long a batch waits for RabbitMQ to attach its reader to the stream before it reports the wait and retries. */
const ATTACH_DEADLINE_MS = 30_000;

/** How long a session's reader may deliver nothing before it checks the stream for more (StreamFeed.checkIdle). */
const IDLE_CHECK_MS = 10_000;
const IDLE_CHECK_DEADLINE_MS = 5_000;

/** How long a batch with nothing in hand waits for a first message (at least max_wait_ms). */
const FIRST_WAIT_MS = 1000;

export interface ApplyBatchOptions {
  replica: string;
  source: string;
  client: pg.ClientBase;
  rabbit: ChannelModel;
  /** Stop at the first transaction boundary after this many changes. */
  maxChanges: number;
  /** Commit at the first transaction boundary this long after the batch's first message (what a change waits in a batch). */
  maxWaitMs: number;
  /** Once something arrived, stop when nothing more arrives for this long. */
  idleMs?: number;
  /** How long to wait for the next chunk of a started transaction before leaving it for later. */
  chunkWaitMs?: number;
  heartbeat: () => void;
  log: Logger;
  /**
   * The replica's configured tables ("schema.table"; all when undefined).
   * Its registry (table-registry.ts) decides once it has one; this list
   * then only says whether a table created on the source joins it.
   */
  tables?: ReadonlySet<string>;
  /** Apply the net change of whole transactions of keyed tables (default true; applier.ts, net-apply.ts). */
  netChange?: boolean;
  /** Changes in one net-change window (default: half of maxChanges, net-apply.ts windowFor). */
  windowChanges?: number;
  /** What a schema change does to this replica (schema-apply.ts); default apply. */
  schemaPolicy?: SchemaPolicy;
  /**
   * Stop early (pause, cancellation, worker shutdown): the batch ends at the
   * next transaction boundary — a transaction still arriving in chunks is
   * rolled back to its savepoint and left for later — and commits what came before.
   */
  signal?: AbortSignal;
  /** Heartbeat at least this often (default 2000 ms); a session beats faster, so a cancellation reaches it within a second. */
  heartbeatMs?: number;
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
  /** Of `txns`, those applied as their net change with others (net-apply.ts); absent in results of older workers. */
  netTxns?: number;
}

/** One batch; `session` is the feed a session keeps between batches (apply-session.ts), else one is opened for this batch. */
export async function applyBatch(o: ApplyBatchOptions, session?: StreamFeed): Promise<BatchResult> {
  const feed = session ?? new StreamFeed();
  try {
    const { result, abandoned } = await runBatch(o, feed);
    // A transaction given up half-arrived (its chunks stopped) is read again from its first chunk by the
    // next batch: whether capture re-sends it whole or its chunks simply resume after a stall, a reader
    // placed at the stored offset sees it from the start.
    if (abandoned) await feed.close();
    return result;
  } catch (err) {
    await feed.close(); // what the reader and protocol saw is not what the replica holds now
    if (!(err instanceof StopAt)) throw err;
    // A rejected change, a gap or a break in the log: keep every transaction before it (apply the
    // batch again, from a fresh reader, stopping at the stream offset where its transaction began), then report it.
    const { result: before } = await runBatch(o, feed, err.at).finally(() => feed.close());
    o.log.info({ replica: o.replica, appliedLsn: before.appliedLsn, txns: before.txns }, 'applied what came before the stop');
    throw err.error;
  } finally {
    if (!session) await feed.close();
  }
}

/**
 * Where batches read from: one stream consumer and the log protocol's state
 * that goes with it. A session (apply-session.ts) keeps it from one batch to
 * the next, so a batch starts reading at once instead of opening a consumer;
 * it is reused only while the replica's stored position is exactly where the
 * protocol ended, and dropped after any failure.
 */
export class StreamFeed {
  private current: { reader: StreamReader; protocol: LogProtocol } | null = null;
  /** Since when the reader has delivered nothing (null: it delivered in the last batch), or since its last check. */
  private idleSince: number | null = null;

  async at(o: ApplyBatchOptions, stored: StoredPosition): Promise<{ reader: StreamReader; protocol: LogProtocol }> {
    if (this.current && samePosition(this.current.protocol.position, stored)) return this.current;
    await this.close();
    const protocol = newProtocol(o, stored);
    // Read from the last message consumed (not the one after it): the protocol checks that the stream
    // still holds it. A replica that never consumed anything needs the stream from its very beginning.
    // Prefetch 256 messages: RabbitMQ delivers a credit's worth per round trip, so a stream of small
    // transactions is read ~4x faster than with 64 (measured in W3); chunks of at most ~128 kB
    // (envelope CHUNK_BYTES) keep that within tens of MB for huge transactions.
    // Within a deadline: amqplib's calls wait for RabbitMQ without one, and a broker that never answers
    // (a stream whose node is down or inaccessible) must show as a retried error, not as a replica
    // "running" that never moves while the batch's heartbeat keeps it alive.
    let reader: StreamReader | null = null;
    let expired = false;
    const attach = async (): Promise<StreamReader> => {
      const r = await StreamReader.open(o.rabbit, o.source, stored.offset ?? 'first', 256);
      // Decode what arrives while the replica runs the batch's statements (issue 27, item 3).
      r.decodeAhead(DECODE_AHEAD_BYTES);
      reader = r;
      if (expired) throw new Error('attach abandoned'); // the deadline passed: closed below, nobody reads it
      // Then (a stream re-created after this is seen by the reader, whose consumer RabbitMQ cancels): is it the stream the position is in?
      if (stored.offset !== null || stored.stream) {
        const gap = protocol.attach(await streamTip(o.rabbit, o.source, stored.offset ?? undefined));
        if (gap) throw gap;
      }
      return r;
    };
    const attaching = attach();
    try {
      const r = await within(attaching, ATTACH_DEADLINE_MS, () => new UnavailableError(
        `replica '${o.replica}': RabbitMQ did not let it attach to the change stream ${streamName(o.source)} within ${ATTACH_DEADLINE_MS / 1000} s ` +
          `(the broker is overloaded, or the stream's node is down or inaccessible: see rabbitmq-diagnostics and the RabbitMQ log); retrying`,
      ));
      this.current = { reader: r, protocol };
      return this.current;
    } catch (err) {
      expired = true;
      // The reader is closed: now if it was opened, else once a late open gets that far.
      const opened = reader as StreamReader | null;
      if (opened) void opened.close(); // not awaited: its own calls may wait on the same broker
      else void attaching.catch(() => undefined).finally(() => (reader as StreamReader | null)?.close());
      throw err;
    }
  }

  /**
   * After each batch of a session. A reader that has delivered nothing for
   * IDLE_CHECK_MS asks the stream for its newest message: if the stream holds
   * one past what the reader was delivered, or is another stream, the
   * consumer is dead without having been told (RabbitMQ normally cancels the
   * consumers of a stream it deletes or loses; a cancel lost in a restart or
   * a connection's churn would leave the replica "running" and never moving).
   * The feed is dropped: the next batch attaches again, where the protocol
   * tells a re-created stream (a gap) from a live one. A false alarm (a
   * message published just now) costs one re-attach.
   */
  async checkIdle(o: ApplyBatchOptions, delivered: boolean): Promise<void> {
    const c = this.current;
    const now = Date.now();
    if (!c || delivered) {
      this.idleSince = null;
      return;
    }
    this.idleSince ??= now;
    if (now - this.idleSince < IDLE_CHECK_MS) return;
    this.idleSince = now;
    // No batch heartbeats meanwhile: bounded well inside the session's heartbeat timeout.
    const behind = await within(
      readerBehind(o.rabbit, o.source, () => c.reader.lastOffset ?? c.protocol.position.offset ?? -1, c.protocol.position.stream ?? null),
      IDLE_CHECK_DEADLINE_MS,
      () => new UnavailableError(`replica '${o.replica}': RabbitMQ did not answer for the newest message of the change stream ${streamName(o.source)} within ${IDLE_CHECK_DEADLINE_MS / 1000} s; retrying`),
    );
    if (behind) {
      o.log.warn({ replica: o.replica }, `the stream reader delivered nothing for ${IDLE_CHECK_MS / 1000} s though ${behind}: attaching again`);
      await this.close();
    }
  }

  async close(): Promise<void> {
    const c = this.current;
    this.current = null;
    this.idleSince = null;
    await c?.reader.close();
  }
}

/** A replica's checkpoint as a batch reads it. */
type StoredPosition = LogPosition & { history: string | null; stream: string | null };

function samePosition(a: LogPosition, b: StoredPosition): boolean {
  return a.lsn === b.lsn && a.offset === b.offset && (a.history ?? null) === b.history && (a.stream ?? null) === b.stream;
}

/**
 * Where a transaction that cannot be applied begins: its message's stream
 * offset, and its position (a run holds several transactions at one offset;
 * undefined: the whole message).
 */
interface StopPoint {
  offset: number;
  lsn?: string;
}

/** The batch must stop at `at`, with `error`. */
class StopAt extends Error {
  constructor(
    readonly at: StopPoint,
    readonly error: Error,
  ) {
    super(error.message);
  }
}

/**
 * Bytes of stream messages decoded ahead of the batch loop (StreamReader.decodeAhead): a few thousand
 * TPC-B transactions, or 32 chunks of a large one (envelope CHUNK_BYTES), so the decoded objects stay
 * within tens of MB.
 */
export const DECODE_AHEAD_BYTES = 4 * 1024 * 1024;

async function runBatch(o: ApplyBatchOptions, feed: StreamFeed, stopAt?: StopPoint): Promise<{ result: BatchResult; abandoned: boolean }> {
  const c = o.client;
  // READ COMMITTED whatever the replica's default: the table registry must be read as of the checkpoint lock, not before it.
  await c.query('BEGIN ISOLATION LEVEL READ COMMITTED');
  const everyMs = o.heartbeatMs ?? 2000;
  const heartbeat = new Heartbeat(o.heartbeat, { everyMs, minGapMs: everyMs / 2 }).start();
  let applier: Applier | undefined;
  try {
    const stored = await lockProgress(o);
    const { reader, protocol } = await feed.at(o, stored);
    // Read under the checkpoint's lock: a table joins or leaves (table-registry.ts) between batches.
    const gate = await TableRegistry.gate(c, o.replica, o.tables, o.tables === undefined);
    applier = new Applier(c, o.replica, o.log, gate, o.netChange ?? true, o.schemaPolicy ?? 'apply', o.windowChanges ?? windowFor(o.maxChanges));
    const batch = new BatchLoop(o, reader, protocol, applier, heartbeat, stopAt);
    const result = await batch.run(stored);
    const at = protocol.position;
    if (at.offset !== stored.offset || at.lsn !== stored.lsn || (at.history ?? null) !== stored.history || (at.stream ?? null) !== stored.stream) {
      await ProgressStore.advance(c, o.replica, { ...at, txns: result.txns, changes: result.changes, lastCommitTime: result.lastCommitTime });
    }
    await c.query('COMMIT').catch((err) => {
      throw commitRefused(o.replica, stored.lsn, result.appliedLsn, err);
    });
    if (result.txns > 0) crashPoint('apply-after-commit'); // test-only (PGFERRY_TEST_CRASH_AT): committed, activity not returned
    return { result, abandoned: batch.abandoned };
  } catch (err) {
    // A window still being written (the error came from elsewhere: the stream, a stop) finishes first: nothing of it may reach the replica after the rollback.
    await applier?.quiesce();
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    heartbeat.stop();
  }
}

/** The replica's checkpoint, locked for this batch; it must belong to the configured source. */
async function lockProgress(o: ApplyBatchOptions): Promise<StoredPosition> {
  const row = await ProgressStore.lock(o.client, o.replica, o.source);
  if (row.source !== o.source) {
    throw new ConfigError(
      `replica '${o.replica}' holds the position of source '${row.source}' (${PROGRESS_TABLE}), but is configured for source '${o.source}': ` +
        `its position says nothing about the new source's log; point it back at '${row.source}', or run pgferry replica resync ${o.replica} to rebuild it from '${o.source}'`,
    );
  }
  return { lsn: row.lsn, offset: row.offset, history: row.history ?? null, stream: row.stream ?? null };
}

function newProtocol(o: ApplyBatchOptions, stored: LogPosition): LogProtocol {
  return new LogProtocol(
    {
      who: `replica '${o.replica}'`,
      noun: 'replica',
      did: 'applied',
      source: o.source,
      fix: `run pgferry replica resync ${o.replica} to rebuild it from a snapshot`,
      // If retention removed the last consumed message, later ones may be gone too: a replica idle for a whole
      // retention span is resynced rather than trusted.
      retentionHint: ' (and raise the stream retention if replicas stay paused this long)',
      needsLogStart: true,
    },
    stored,
  );
}

/**
 * The read-and-apply loop of one batch: messages in stream order through the
 * protocol, chunks to the applier, each multi-chunk transaction under a
 * savepoint so a re-sent or cut-short one can be undone.
 */
class BatchLoop {
  private readonly result: BatchResult;
  /** The transaction being applied, and whether it has a savepoint (several chunks). */
  private open: { lsn: string; savepoint: boolean; changes: number } | null = null;
  private received = 0;
  /** A transaction was given up half-arrived: the next batch must read it again from the stored offset. */
  abandoned = false;
  private readonly signal: AbortSignal | undefined;
  /** Where each transaction applied in this batch began in the stream (its first message's offset): a refused one is stopped at. */
  private readonly starts = new Map<string, number>();

  constructor(
    private readonly o: ApplyBatchOptions,
    private readonly reader: StreamReader,
    private readonly protocol: LogProtocol,
    private readonly applier: Applier,
    private readonly heartbeat: Heartbeat,
    private readonly stopAt: StopPoint | undefined,
  ) {
    // The re-run that keeps what came before a refused change is not stopped early: it is what the stop reports.
    this.signal = stopAt === undefined ? o.signal : undefined;
    this.result = { appliedLsn: '', offset: null, txns: 0, changes: 0, lastCommitTime: null, caughtUp: false, skipped: 0 };
  }

  async run(stored: LogPosition): Promise<BatchResult> {
    const { o, result } = this;
    result.appliedLsn = stored.lsn;
    result.offset = stored.offset;
    const started = Date.now();
    const idleMs = o.idleMs ?? 100;
    const chunkWaitMs = o.chunkWaitMs ?? 30_000;
    // With nothing in hand there is nothing to commit: wait for the first message a while longer
    // (an idle replica then costs one empty batch a second, not one per max_wait_ms).
    const firstWaitMs = Math.max(o.maxWaitMs, FIRST_WAIT_MS);
    let firstAt: number | null = null;
    try {
      for (;;) {
        if (this.signal?.aborted) {
          await this.stopEarly();
          break;
        }
        const full = result.changes >= o.maxChanges || (firstAt !== null && Date.now() - firstAt >= o.maxWaitMs);
        if (!this.open && full) break;
        const wait = this.open ? chunkWaitMs : this.received ? idleMs : Math.max(0, firstWaitMs - (Date.now() - started));
        const msg = await nextBeating(this.reader, wait, this.heartbeat, this.signal);
        if (!msg) {
          if (this.signal?.aborted) continue;
          await this.nothingMore();
          break;
        }
        firstAt ??= Date.now();
        if ((await this.take(msg)) === 'stop') {
          this.protocol.abandon();
          await this.discardOpen();
          break;
        }
      }
      await this.applier.flush();
    } catch (err) {
      const lsn = err instanceof RejectedChangeError || err instanceof SchemaMismatchError ? err.sourceLsn : undefined;
      const offset = lsn === undefined ? undefined : this.starts.get(lsn);
      throw offset === undefined ? err : new StopAt({ offset, lsn }, err as Error);
    }
    const at = this.protocol.position;
    result.appliedLsn = at.lsn;
    result.offset = at.offset;
    result.netTxns = this.applier.netTxns;
    return result;
  }

  /** The stream has nothing more for now. */
  private async nothingMore(): Promise<void> {
    if (!this.open) {
      this.result.caughtUp = true;
      return;
    }
    // The rest of this transaction has not been published (capture restarted mid-transaction
    // and will re-send it whole). Undo its part; the next batch reads it again.
    this.o.log.info({ replica: this.o.replica, lsn: this.protocol.abandon() }, 'transaction incomplete in the stream; left for the next batch');
    this.abandoned = true;
    await this.discardOpen();
  }

  /** Stopped from outside: a transaction still arriving is undone and left for later; everything before it commits. */
  private async stopEarly(): Promise<void> {
    if (!this.open) return;
    this.o.log.info({ replica: this.o.replica, lsn: this.protocol.abandon() }, 'stopping: the transaction in progress is left for the next batch');
    await this.discardOpen();
  }

  private async discardOpen(): Promise<void> {
    if (this.open?.savepoint) {
      await this.o.client.query('ROLLBACK TO SAVEPOINT pgferry_txn');
      this.applier.rollback(); // the registry it routes by is undone with the savepoint (a RENAME, a CREATE)
    }
    this.open = null;
  }

  /**
   * One message of the stream — a transaction, a chunk, or a run's
   * transactions one by one: skipped, applied, or the stop of the batch
   * ('stop': the re-run that keeps what came before a refused change reached it).
   */
  private async take(msg: { offset: number; lsn?: string; stream?: string; body: Buffer }): Promise<'stop' | undefined> {
    for (const part of this.protocol.parts(logMessageOf(msg, true))) {
      if (this.reached(part)) return 'stop';
      const step = this.protocol.step(part);
      if (step.discard) {
        // Sent again from its first chunk (capture restarted), or cut short: undo what we applied of it.
        this.o.log.info({ replica: this.o.replica, lsn: step.discard, offset: msg.offset }, 'transaction sent again in the stream; what was applied of it is undone');
        await this.discardOpen();
      }
      if (step.kind === 'skip') {
        this.result.skipped += 1;
        continue;
      }
      if (step.kind !== 'chunk') throw new StopAt({ offset: msg.offset, lsn: part.lsn }, step.error);
      this.received += 1;
      const m = step.m;
      if (m.seq === 0) this.starts.set(m.lsn, msg.offset);
      if (!this.open && m.seq === 0 && m.last && this.applier.takeNow(m)) {
        this.finished(m, m.changes.length);
        continue;
      }
      await this.applyChunk(m);
    }
    return undefined;
  }

  /** Whether the re-run that keeps what came before a refused change has reached it. */
  private reached(part: LogMessage): boolean {
    const s = this.stopAt;
    if (!s) return false;
    if (part.offset !== s.offset) return part.offset > s.offset;
    return s.lsn === undefined || part.lsn === undefined || compareLsn(part.lsn, s.lsn) >= 0;
  }

  private async applyChunk(m: TxnMessage): Promise<void> {
    const c = this.o.client;
    if (!this.open) {
      this.open = { lsn: m.lsn, savepoint: !m.last, changes: 0 };
      if (this.open.savepoint) {
        // Defect A: what is queued belongs to earlier, finished transactions; it goes to the replica
        // before the savepoint, or rolling back to it (a re-send, a chunk that never came) undoes it too.
        await this.applier.flush();
        await c.query('SAVEPOINT pgferry_txn');
        this.applier.mark();
      }
    }
    const open = this.open;
    await this.applier.apply(m);
    // A transaction in several chunks may be rolled back to its savepoint: keep nothing of it queued.
    if (open.savepoint) await this.applier.flush();
    open.changes += m.changes.length;
    if (!m.last) return;
    if (open.savepoint) await c.query('RELEASE SAVEPOINT pgferry_txn');
    this.open = null;
    this.finished(m, open.changes);
  }

  /** A transaction is applied (or in the applier's hands): `m` is its last chunk. */
  private finished(m: TxnMessage, changes: number): void {
    this.result.txns += 1;
    this.result.changes += changes;
    this.result.lastCommitTime = m.commitTime;
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

/** Wait for the next message in slices of at most a second (a quarter of one when it can be stopped), heartbeating between them. */
async function nextBeating(reader: StreamReader, waitMs: number, heartbeat: Heartbeat, signal?: AbortSignal) {
  const until = Date.now() + waitMs;
  const slice = signal ? 250 : 1000;
  for (;;) {
    const msg = await reader.next(Math.min(slice, Math.max(0, until - Date.now())));
    heartbeat.beat();
    if (msg || Date.now() >= until || signal?.aborted) return msg;
  }
}
