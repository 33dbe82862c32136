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
 * and the replication error classifier. This file wires them to one
 * replication connection and runs until stopped.
 */
import { LogicalReplicationService, Pgoutput } from 'pg-logical-replication';
import type pg from 'pg';
import { AckTracker, Released, TrackedTxn } from './ack-tracker';
import { RunPublisher } from '../../changelog/runs';
import { TxnAssembler, type CommitInfo } from './assembler';
import { IdleHeartbeat } from './idle-heartbeat';
import { TextPgoutputPlugin } from './pgoutput';
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
import { formatLsn, parseLsn, ZERO_LSN } from '../../lsn';
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
  const service = new LogicalReplicationService(
    { connectionString: url, options: SESSION_OPTIONS, connectionTimeoutMillis: 10_000 } as pg.ClientConfig,
    // Flow control is capture's own (CaptureRun.onMessage): the library's awaits every message.
    { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: false } },
  );
  // Without its flow control the library calls its async `_acknowledge` after every message, which does
  // nothing when acknowledging is manual (capture's own: sendAck) but costs a promise each; a harmless
  // extra property should a later version rename it.
  Object.defineProperty(service, '_acknowledge', { value: () => undefined });
  try {
    const confirmedLsn = await checkSlot(catalog, source);
    const history = await walHistory(what, url);
    const schemaKey = await schemaCaptureKey(catalog);
    publisher = await StreamPublisher.connect(opts.rabbitUrl, source, opts.retention);
    if (publisher.created) opts.log.warn({ source, stream: publisher.stream }, streamLossWarning(source, publisher.stream));
    const run = new CaptureRun(opts, service, publisher, new TypeNames(catalog), history, confirmedLsn, schemaKey);
    heartbeat = new IdleHeartbeat({ source, url, log: opts.log, intervalMs: opts.heartbeatMs ?? 60_000, busy: () => run.busy });
    run.onTransaction = () => heartbeat!.noteTransaction();
    return await run.until(heartbeat);
  } catch (err) {
    if (err instanceof Error && classifyError(err) !== 'permanent' && classifyError(err) !== 'transient') {
      throw new UnavailableError(`${what}: capture failed (${redactText(describeCause(err), [url])}); it will restart from the slot`, { cause: err });
    }
    throw err;
  } finally {
    await service.destroy().catch(() => undefined);
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

/** The socket of the library's replication connection, which capture pauses for flow control (the library does the same with its own). */
function replicationStream(service: LogicalReplicationService): { pause(): void; resume(): void } | undefined {
  return (service as unknown as { _connection?: { stream?: { pause(): void; resume(): void } } })._connection?.stream;
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
    private readonly service: LogicalReplicationService,
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
    this.service.on('data', (_lsn: string, msg: Pgoutput.Message) => this.onMessage(msg));
    this.service.on('heartbeat', (lsn: string, _ts: number, shouldRespond: boolean) => this.onKeepalive(lsn, shouldRespond));
    this.service.on('error', (err: Error) => this.failRun(err));
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
    // `messages`: logical messages are sent too (the idle heartbeat; other programs' are ignored).
    const plugin = new TextPgoutputPlugin({ protoVersion: 1, publicationNames: [publicationName(source)], messages: true });
    const parse = plugin.parse.bind(plugin);
    plugin.parse = (buf: Buffer) => {
      this.received += 1;
      return parse(buf);
    };
    const replication = this.service.subscribe(plugin, slotName(source)).then(
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
      replicationStream(this.service)?.resume();
    }
  }

  /**
   * Keep a message until the one before it is done, with the replication
   * connection paused meanwhile (PostgreSQL waits): the messages held still
   * point into pg's read buffer, which it reuses only for data read later.
   */
  private hold(msg: Pgoutput.Message): void {
    this.backlog.push(msg);
    if (!this.paused) {
      this.paused = true;
      replicationStream(this.service)?.pause();
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
  private publish(out: TxnMessage[], txn: TrackedTxn, commit: CommitInfo | undefined, from = 0): Promise<void> | undefined {
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

  /** The lib adds 1 to what it is given; the server must receive exactly the confirmed position. */
  private sendAck(): void {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    this.lastAckAt = Date.now();
    const lsn = parseLsn(this.progress.confirmedLsn);
    if (lsn > 0n) void this.service.acknowledge(formatLsn(lsn - 1n)).catch(() => undefined);
  }
}
