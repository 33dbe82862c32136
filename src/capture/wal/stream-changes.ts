/**
 * WAL capture: stream pgoutput from the slot, group changes by source
 * transaction, publish each transaction (or its chunks) to the source's
 * stream with publisher confirms, and acknowledge the slot only with the end
 * position of transactions that RabbitMQ has confirmed — together with every
 * transaction before them. If the process dies, the slot replays everything
 * after that position; replicas skip what they already applied.
 *
 * The parts, each in its own file: the ack tracker (which position the slot
 * may be acknowledged to), the assembler (pgoutput → envelope chunks), the
 * type names (catalog lookups for RELATION messages), the idle heartbeat,
 * the replication connection and its error classifier. This file wires them
 * together and runs until stopped.
 */
import type { Pgoutput } from 'pg-logical-replication';
import type pg from 'pg';
import { AckTracker, Released, TrackedTxn } from './ack-tracker';
import { RunPublisher } from '../../changelog/runs';
import { TxnAssembler, type CommitInfo } from './assembler';
import { IdleHeartbeat } from './idle-heartbeat';
import { PgoutputDecoder } from './pgoutput';
import { ReplicationConnection } from './replication-connection';
import type { TxnMessage } from '../../change';
import { classifyReplicationError } from './replication-errors';
import { slotInfo } from './prepare';
import { streamLossWarning } from '../prepare';
import { TypeNames } from './type-names';
import { walHistory } from '../history';
import { schemaCaptureKey } from '../schema-capture';
import type { CaptureOptions, CaptureProgress } from '../contract';
import { StreamPublisher } from '../../changelog/stream';
import { GapError, UnavailableError, classifyError, describeCause } from '../../errors';
import { parseLsn, ZERO_LSN } from '../../lsn';
import { publicationName, slotName } from '../../names';
import { connectPg, SESSION_OPTIONS } from '../../pg';
import { redactText } from '../../redact';
import { Heartbeat } from '../../heartbeat';
import { crashPoint } from '../../testing/crash-point';

export async function streamChanges(opts: CaptureOptions): Promise<CaptureProgress> {
  const { source, url } = opts;
  const what = `source '${source}'`;
  const catalog = await connectPg(what, url);
  let publisher: StreamPublisher | undefined;
  let heartbeat: IdleHeartbeat | undefined;
  const replication = new ReplicationConnection({ connectionString: url, options: SESSION_OPTIONS, connectionTimeoutMillis: 10_000 });
  try {
    const confirmedLsn = await checkSlot(catalog, source);
    const history = await walHistory(what, url);
    const schemaKey = await schemaCaptureKey(catalog);
    publisher = await StreamPublisher.connect(opts.rabbitUrl, source, opts.retention);
    if (publisher.created) opts.log.warn({ source, stream: publisher.stream }, streamLossWarning(source, publisher.stream));
    const run = new CaptureRun(opts, replication, publisher, new TypeNames(catalog), history, confirmedLsn, schemaKey);
    heartbeat = new IdleHeartbeat({ source, url, log: opts.log, intervalMs: opts.heartbeatMs ?? 60_000, busy: () => run.busy });
    run.onTransaction = () => heartbeat!.noteTransaction();
    return await run.until(heartbeat);
  } catch (err) {
    if (err instanceof Error && classifyError(err) !== 'permanent' && classifyError(err) !== 'transient') {
      throw new UnavailableError(`${what}: capture failed (${redactText(describeCause(err), [url])}); it will restart from the slot`, { cause: err });
    }
    throw err;
  } finally {
    await replication.close();
    await heartbeat?.close();
    await publisher?.close();
    await catalog.end().catch(() => undefined);
  }
}

/** The slot's confirmed position; a missing or invalidated slot is a gap. */
async function checkSlot(catalog: pg.Client, source: string): Promise<string> {
  const what = `source '${source}'`;
  const slot = await slotInfo(catalog, source);
  if (!slot.exists) {
    throw new GapError(`${what}: replication slot ${slotName(source)} does not exist; changes since it was dropped are lost to pgferry: run pgferry up to recreate it and resync the replicas`);
  }
  if (slot.walStatus === 'lost') {
    throw new GapError(`${what}: replication slot ${slotName(source)} was invalidated (max_slot_wal_keep_size); the replicas need a resync`);
  }
  return slot.confirmedFlushLsn ?? ZERO_LSN;
}

/** The slot is acknowledged at most this often as RabbitMQ confirms transactions (CaptureRun.ackSoon). */
const ACK_EVERY_MS = 100;

/** One capture run on one replication connection: the message handler, the acknowledgements, and the stop. */
class CaptureRun {
  readonly progress: CaptureProgress;
  private readonly acks: AckTracker;
  /** Whole transactions published together while RabbitMQ confirms earlier ones (changelog/runs.ts). */
  private readonly runs: RunPublisher;
  private readonly assembler: TxnAssembler;
  private current: TrackedTxn | null = null;
  /** Changes published for the open transaction. */
  private changes = 0;
  private fatal: Error | null = null;
  private failRun: (e: Error) => void = () => undefined;
  private readonly failed: Promise<never>;
  // Messages the replication connection has received (counted as they are decoded, in arrival
  // order) and those the handler has finished: equal when nothing is queued or in progress.
  private received = 0;
  private handled = 0;
  /** A slot acknowledgement waiting for ACK_EVERY_MS to pass, and when the last one was sent. */
  private ackTimer: NodeJS.Timeout | null = null;
  private lastAckAt = 0;
  /** Messages that arrived while one before them waits (onMessage), and whether that is so. */
  private backlog: Pgoutput.Message[] = [];
  private waiting = false;
  private paused = false;
  onTransaction: () => void = () => undefined;

  constructor(
    private readonly opts: CaptureOptions,
    private readonly replication: ReplicationConnection,
    private readonly pub: StreamPublisher,
    private readonly types: TypeNames,
    history: string,
    confirmedLsn: string,
    schemaKey: string | null,
  ) {
    this.progress = { confirmedLsn, txns: 0, changes: 0, messages: 0, startedAt: new Date().toISOString() };
    this.acks = new AckTracker(confirmedLsn);
    this.runs = new RunPublisher(pub, opts.runs);
    this.runs.onFailure = (e) => this.failRun(e);
    this.assembler = new TxnAssembler({
      source: opts.source,
      chunkChanges: opts.chunkChanges,
      linesAfter: opts.copyLinesAfter,
      chunkBytes: opts.chunkBytes,
      maxMessageBytes: opts.maxMessageBytes,
      history,
      schemaKey,
      typeName: (oid, mod) => types.name(oid, mod),
    });
    this.failed = new Promise<never>((_, reject) => {
      this.failRun = (e) => {
        this.fatal ??= e;
        reject(this.fatal);
      };
    });
    this.failed.catch(() => undefined);
  }

  /** A transaction is open, or the run failed: no heartbeat now. */
  get busy(): boolean {
    return this.fatal !== null || this.current !== null;
  }

  /** Stream until the signal, maxRunMs, or a failure; then let outstanding confirms land and acknowledge. */
  async until(heartbeat: IdleHeartbeat): Promise<CaptureProgress> {
    const { opts } = this;
    const replication = this.subscribe();
    const report = new Heartbeat(opts.onProgress, { everyMs: 2000, details: () => ({ ...this.progress }) }).start();
    const keepalive = setInterval(() => this.sendAck(), 10_000);
    heartbeat.start();
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        replication,
        this.failed,
        new Promise<void>((resolve) => {
          if (opts.signal.aborted) return resolve();
          opts.signal.addEventListener('abort', () => resolve(), { once: true });
          if (opts.maxRunMs > 0) timer = setTimeout(resolve, opts.maxRunMs);
        }),
      ]);
    } finally {
      report.stop();
      clearInterval(keepalive);
      heartbeat.stop();
      if (timer) clearTimeout(timer);
      if (this.ackTimer) clearTimeout(this.ackTimer); // acknowledged below when stopping cleanly
      this.ackTimer = null;
    }
    // Stopping: publish the run held, and let outstanding confirms land so the slot moves as far as it may.
    if (!this.fatal) await this.runs.flush().catch((err: Error) => (this.fatal ??= err));
    const deadline = Date.now() + 5000;
    while (this.pub.pending > 0 && Date.now() < deadline && !this.fatal) await new Promise((r) => setTimeout(r, 20));
    this.sendAck();
    opts.log.info({ source: opts.source, confirmedLsn: this.progress.confirmedLsn, txns: this.progress.txns }, 'capture stopping');
    return { ...this.progress };
  }

  private subscribe(): Promise<void> {
    const { source, url, signal } = this.opts;
    const decoder = new PgoutputDecoder();
    // `messages`: logical messages are sent too (the idle heartbeat; other programs' are ignored).
    // From the slot's confirmed position (the server starts there when asked for an earlier one).
    // The names are pgferry's own (names.ts: lower-case letters, digits and _), as the server wants them quoted.
    const sql = `START_REPLICATION SLOT "${slotName(source)}" LOGICAL 0/0 (proto_version '1', publication_names '"${publicationName(source)}"', messages 'true')`;
    const handlers = {
      xlogData: (buf: Buffer, start: number, end: number) => {
        this.received += 1;
        let msg: Pgoutput.Message;
        try {
          msg = decoder.parse(buf, start, end);
        } catch (err) {
          return this.failRun(err as Error);
        }
        this.onMessage(msg);
      },
      keepalive: (walEnd: string, replyNow: boolean) => this.onKeepalive(walEnd, replyNow),
    };
    const replication = this.replication.start(sql, handlers, (err) => this.failRun(err)).then(
      () => {
        if (!signal.aborted) throw new UnavailableError(`source '${source}': the replication connection closed; capture will reconnect`);
      },
      (err) => {
        throw classifyReplicationError(source, url, err);
      },
    );
    replication.catch(() => undefined);
    return replication;
  }

  /**
   * One pgoutput message, in arrival order. Handled at once when nothing is
   * waiting, with no promise: most messages (a row, a BEGIN) only feed the
   * assembler, and a promise per message, under the activity's async
   * context, was a third of capture's CPU (W1, --cpu-prof). A message that
   * must wait (a publish, a catalog lookup) holds the ones after it in
   * `backlog` until it is done.
   */
  private onMessage(msg: Pgoutput.Message): void {
    if (this.waiting) return this.hold(msg);
    this.drain(msg);
  }

  /** Handle `msg`, then the backlog, until one has to wait. */
  private drain(msg: Pgoutput.Message | undefined): void {
    while (msg) {
      const pending = this.handle(msg);
      if (pending) {
        this.waiting = true;
        void pending.then(() => {
          this.waiting = false;
          this.drain(this.backlog.shift());
        });
        return;
      }
      msg = this.backlog.shift();
    }
    if (this.paused) {
      this.paused = false;
      this.replication.resume();
    }
  }

  /**
   * Keep a message until the one before it is done, with the replication
   * connection paused meanwhile (PostgreSQL waits); the messages held point
   * into the bytes the connection read, which nothing reuses
   * (replication-connection.ts).
   */
  private hold(msg: Pgoutput.Message): void {
    this.backlog.push(msg);
    if (!this.paused) {
      this.paused = true;
      this.replication.pause();
    }
  }

  /** Handle one message; a promise when it has to wait for something (it never rejects: a failure fails the run). */
  private handle(msg: Pgoutput.Message): Promise<void> | undefined {
    let pending: Promise<void> | undefined;
    try {
      if (!this.fatal) pending = msg.tag === 'relation' ? this.types.learn(msg).then(() => this.assemble(msg)) : this.assemble(msg);
    } catch (err) {
      this.failRun(err as Error);
    }
    if (!pending) {
      this.handled += 1;
      return undefined;
    }
    return pending.then(
      () => void (this.handled += 1),
      (err: Error) => {
        this.failRun(err);
        this.handled += 1;
      },
    );
  }

  /** Feed the assembler; a promise if what it gives must be published first. */
  private assemble(msg: Pgoutput.Message): Promise<void> | undefined {
    if (msg.tag === 'begin') this.current = this.acks.begin();
    const { out, commit } = this.assembler.push(msg);
    if (out.length) return this.publish(out, this.current!, commit);
    if (commit) this.committed(this.current!, commit);
    return undefined;
  }

  /** Publish `out` from its `from`th message, then account the commit; a promise only if a publish makes it wait. */
  private publish(out: readonly TxnMessage[], txn: TrackedTxn, commit: CommitInfo | undefined, from = 0): Promise<void> | undefined {
    for (let i = from; i < out.length; i++) {
      const m = out[i];
      this.changes += m.changes.length;
      this.acks.published(txn); // held in a run counts as published: the slot waits for its run's confirm
      this.progress.messages += 1;
      const waiting = this.runs.publish(
        m,
        () => {
          crashPoint('capture-after-confirm'); // test-only (PGFERRY_TEST_CRASH_AT): confirmed, slot not yet acknowledged
          this.account(this.acks.confirmed(txn));
        },
        () => this.acks.nack(),
      );
      if (waiting) {
        return waiting.then(() => {
          crashPoint('capture-before-confirm');
          return this.publish(out, txn, commit, i + 1);
        });
      }
      crashPoint('capture-before-confirm'); // test-only (PGFERRY_TEST_CRASH_AT): published, its confirm not yet seen
    }
    if (commit) this.committed(txn, commit);
    return undefined;
  }

  private committed(txn: TrackedTxn, commit: CommitInfo): void {
    this.current = null;
    this.onTransaction();
    this.account(this.acks.commit(txn, { lsn: commit.lsn, endLsn: commit.endLsn, commitTime: commit.commitTime, changes: this.changes }));
    this.changes = 0;
  }

  /**
   * A keepalive carries the position the server has decoded up to, everything before it sent
   * (transactions touching no published table are not sent at all). When all of that is handled
   * and every transaction is confirmed by RabbitMQ, the slot may move there, as PostgreSQL's own
   * subscriber does: a transaction still open on the source commits after it and is sent then.
   */
  private onKeepalive(lsn: string, shouldRespond: boolean): void {
    if (!this.fatal && this.received === this.handled && this.current === null && this.acks.keepalive(lsn)) {
      this.progress.confirmedLsn = this.acks.position;
      this.sendAck();
    } else if (shouldRespond) this.sendAck();
  }

  /** Count what the tracker released and acknowledge the slot if its position moved. */
  private account(released: Released[]): void {
    const p = this.progress;
    for (const t of released) {
      p.lastLsn = t.lsn;
      p.lastCommitTime = t.commitTime;
      p.txns += 1;
      p.changes += t.changes;
    }
    if (this.acks.position !== p.confirmedLsn) {
      p.confirmedLsn = this.acks.position;
      this.ackSoon();
    }
  }

  /**
   * Acknowledge the slot now, or once ACK_EVERY_MS has passed since the last
   * acknowledgement: under load RabbitMQ confirms a run every millisecond or
   * so, and one standby status message per confirm cost capture a sixth of
   * its CPU (W3, measured with --cpu-prof). The position the slot is
   * acknowledged to is the same, at most ACK_EVERY_MS later.
   */
  private ackSoon(): void {
    if (this.ackTimer) return;
    const wait = this.lastAckAt + ACK_EVERY_MS - Date.now();
    if (wait <= 0) return this.sendAck();
    this.ackTimer = setTimeout(() => this.sendAck(), wait);
    this.ackTimer.unref();
  }

  /** The slot moves to exactly the confirmed position. */
  private sendAck(): void {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    this.lastAckAt = Date.now();
    const lsn = parseLsn(this.progress.confirmedLsn);
    if (lsn > 0n) this.replication.acknowledge(lsn);
  }
}
