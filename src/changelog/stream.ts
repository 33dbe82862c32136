/**
 * The change log: one RabbitMQ stream per source (`pgferry.<source>.changes`),
 * written by capture with publisher confirms and read by every replica and
 * subscriber from its own offset. Streams are append-only and replayable;
 * consumers never remove anything, retention does.
 *
 * Each stream has an identity: a random id its creator writes in a marker,
 * its first message, and every publisher stamps on every message (header
 * `pgferry-stream` and the envelope). Consumers store it with their position
 * and compare it whenever they attach and read (protocol.ts): offsets of a
 * stream deleted and re-created under the same name mean nothing for
 * positions stored in the old one.
 */
import { randomUUID } from 'node:crypto';
import type * as amqp from 'amqplib';
import type { TxnMessage } from '../change';
import type { LogMessage } from './protocol';
import { decodeTxns, encodeTxn, encodeTxnRun, isStreamMarker, streamMarker } from './envelope';
import { ConfigError, UnavailableError } from '../errors';
import { streamName } from '../names';
import { connectRabbit } from './rabbit';

export interface Retention {
  /** x-max-length-bytes; 0 = unlimited. */
  maxBytes: number;
  /** x-max-age, e.g. "7D"; empty = unlimited. */
  maxAge: string;
  /** x-stream-max-segment-size-bytes: retention removes whole segments of this size. */
  segmentBytes: number;
}

/** A source's stream and the identity its messages carry. */
export interface StreamIdentity {
  name: string;
  /** Stamped on every message published to it (TxnMessage.stream). */
  id: string;
  /** The stream did not exist: this call created it. */
  created: boolean;
}

/**
 * Create the stream if it does not exist, and make sure it has an identity.
 * An existing stream keeps the retention it was created with (RabbitMQ
 * refuses to redeclare a queue with other arguments); change it with a
 * RabbitMQ policy, as the README shows.
 */
export async function declareStream(conn: amqp.ChannelModel, source: string, retention: Retention): Promise<StreamIdentity> {
  const name = streamName(source);
  let created = false;
  if (!(await streamExists(conn, name))) {
    const args: Record<string, unknown> = { 'x-queue-type': 'stream', 'x-stream-max-segment-size-bytes': retention.segmentBytes };
    if (retention.maxBytes > 0) args['x-max-length-bytes'] = retention.maxBytes;
    if (retention.maxAge) args['x-max-age'] = retention.maxAge;
    const ch = await conn.createChannel();
    try {
      await ch.assertQueue(name, { durable: true, arguments: args });
    } finally {
      await ch.close().catch(() => undefined);
    }
    created = true;
  }
  return { name, id: await establishIdentity(conn, source), created };
}

/**
 * The stream's identity: the one its newest message carries. A stream
 * without one (just created, or written only by an older pgferry) gets a
 * marker with a new id, written under a lock so that two processes
 * declaring the stream at once give it one identity, not two.
 */
async function establishIdentity(conn: amqp.ChannelModel, source: string): Promise<string> {
  const tip = await streamTip(conn, source);
  if (tip?.stream) return tip.stream;
  return withIdentityLock(conn, source, async () => {
    const again = await streamTip(conn, source); // another process may have written it while this one waited
    if (again?.stream) return again.stream;
    const publisher = await StreamPublisher.open(conn, source, randomUUID());
    try {
      await publisher.publish(streamMarker({ source, stream: publisher.stream }), () => undefined);
      await publisher.flush();
    } finally {
      await publisher.close();
    }
    return publisher.stream;
  });
}

/**
 * Run `fn` holding the stream's identity lock: an exclusive queue, which
 * RabbitMQ lets one connection at a time declare (RESOURCE_LOCKED for the
 * others) and removes when that connection goes.
 */
async function withIdentityLock<T>(conn: amqp.ChannelModel, source: string, fn: () => Promise<T>): Promise<T> {
  const lock = `${streamName(source)}.identity-lock`;
  const until = Date.now() + 30_000;
  for (;;) {
    const ch = await conn.createChannel();
    ch.on('error', () => undefined); // RESOURCE_LOCKED closes the channel: seen as the assertQueue failure
    try {
      await ch.assertQueue(lock, { exclusive: true, durable: false });
    } catch (err) {
      await ch.close().catch(() => undefined);
      if ((err as { code?: number }).code === 403) {
        throw new ConfigError(
          `the change stream ${streamName(source)} of source '${source}': RabbitMQ refused pgferry's user the queue ${lock}, which it holds for a moment while it gives a new stream its identity ` +
            `(${(err as Error).message}); allow it in the user's configure permission, e.g. rabbitmqctl set_permissions -p / <user> '^${streamName(source).replace(/\./g, '\\.')}(\\.identity-lock)?$' …`,
          { cause: err },
        );
      }
      if ((err as { code?: number }).code !== 405) throw err;
      if (Date.now() > until) {
        throw new UnavailableError(`the change stream ${streamName(source)} of source '${source}': another process has held ${lock} for 30 s while giving the stream its identity; retrying`, { cause: err });
      }
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
      continue;
    }
    try {
      return await fn();
    } finally {
      await ch.deleteQueue(lock).catch(() => undefined);
      await ch.close().catch(() => undefined);
    }
  }
}

/**
 * The newest message the stream holds (null when it is empty) — or, given
 * `atLeast`, the first message at or after that offset: what a consumer
 * attaching at a stored offset must find, since RabbitMQ attaches a consumer
 * asking for an offset past a stream's end at its end, silently.
 */
export async function streamTip(conn: amqp.ChannelModel, source: string, atLeast?: number): Promise<StreamMessage | null> {
  // 'last' starts at the newest chunk: read it to its end (a busy stream keeps growing: the newest seen within 2 s will do).
  const reader = await StreamReader.open(conn, source, 'last', 64);
  try {
    const until = Date.now() + 2000;
    let tip: StreamMessage | null = null;
    for (let m = await reader.next(500); m; m = Date.now() < until ? await reader.next(200) : null) {
      if (atLeast !== undefined && m.offset >= atLeast) return m;
      if (!tip || m.offset >= tip.offset) tip = m;
    }
    // Nothing delivered: empty — unless RabbitMQ is only slow (a busy broker), which must not read as "empty".
    if (!tip && (await messageCount(conn, streamName(source))) > 0) {
      throw new UnavailableError(`the change stream ${streamName(source)} of source '${source}' holds messages but RabbitMQ delivered none within 500 ms; retrying`);
    }
    return tip;
  } finally {
    await reader.close();
  }
}

/**
 * For a reader that has delivered nothing for a while: whether the stream
 * holds more than it delivered (its newest offset past `delivered()`, the
 * last offset delivered or consumed, -1 for none), or is another stream
 * than `own` — a consumer RabbitMQ stopped serving without a cancel. A
 * message published just now is given a second to arrive. Returns what was
 * seen, or null when the reader is simply idle at the stream's end.
 */
export async function readerBehind(conn: amqp.ChannelModel, source: string, delivered: () => number, own: string | null): Promise<string | null> {
  const tip = await streamTip(conn, source);
  if (tip === null) return delivered() >= 0 ? `the stream is empty, and the reader was delivered offset ${delivered()}` : null;
  if (own && tip.stream && tip.stream !== own) return `the stream is ${tip.stream}, the reader's position is in ${own}`;
  for (const until = Date.now() + 1000; tip.offset > delivered() && Date.now() < until; ) await new Promise((r) => setTimeout(r, 50));
  if (tip.offset > delivered()) return `the stream's newest offset is ${tip.offset}, the reader was delivered ${delivered()}`;
  return null;
}

/** The number of messages RabbitMQ reports for a queue (on a channel of its own). */
async function messageCount(conn: amqp.ChannelModel, name: string): Promise<number> {
  const ch = await conn.createChannel();
  ch.on('error', () => undefined);
  try {
    return (await ch.checkQueue(name)).messageCount;
  } finally {
    await ch.close().catch(() => undefined);
  }
}

/** Whether a queue exists (asked on a channel of its own: RabbitMQ closes the channel when it does not). */
export async function streamExists(conn: amqp.ChannelModel, name: string): Promise<boolean> {
  const ch = await conn.createChannel();
  ch.on('error', () => undefined);
  try {
    await ch.checkQueue(name);
    return true;
  } catch (err) {
    if ((err as { code?: number }).code === 404) return false;
    throw err;
  } finally {
    await ch.close().catch(() => undefined);
  }
}

/** For readers that are not pgferry's own (subscribers, tail): the source's stream must exist, else say how to get it. */
export async function requireStream(conn: amqp.ChannelModel, source: string, who: string): Promise<void> {
  if (await streamExists(conn, streamName(source))) return;
  throw new ConfigError(
    `${who}: source '${source}' has no change stream (${streamName(source)}) in RabbitMQ; start pgferry for that source first (pgferry up), or fix the source name`,
  );
}

/**
 * Publishes change-log messages on a confirm channel. `publish` resolves when
 * the message is handed to the socket; `confirmed` tracks broker confirms.
 * Confirms arrive in order per channel, but we still count per message so a
 * position is released only when all messages up to it are confirmed.
 */
export class StreamPublisher {
  private failed: Error | null = null;
  private unconfirmed = 0;
  private waiters: (() => void)[] = [];
  /** connect() found no stream and created it. */
  created = false;
  private watcher: amqp.Channel | null = null;
  /** Waits that end only on failure (the socket drain). */
  private failWaiters: ((e: Error) => void)[] = [];

  private constructor(
    private readonly ch: amqp.ConfirmChannel,
    private readonly queue: string,
    /** The identity of the stream, stamped on every message. */
    readonly stream: string,
    private readonly window: number,
    /** The connection this publisher opened for itself (closed with it), if any. */
    private readonly own?: amqp.ChannelModel,
  ) {
    ch.on('error', (e: Error) => this.fail(e));
    ch.on('close', () => this.fail(new UnavailableError('RabbitMQ closed the publishing channel (the connection dropped or the server is restarting)')));
    // Published `mandatory`: a message no queue took (the stream was deleted) comes back here, before
    // its confirm — which then must not count as delivered.
    ch.on('return', (msg: amqp.Message) =>
      this.fail(new UnavailableError(`RabbitMQ returned a change-log message as unroutable (${(msg.fields as { replyText?: string }).replyText ?? 'NO_ROUTE'}): the stream ${this.queue} does not exist any more; capture restarts and declares it again`)),
    );
  }

  /** A publisher on `conn` stamping `stream`, the identity declareStream gave (or the one a marker is written for). */
  static async open(conn: amqp.ChannelModel, source: string, stream: string, window = 16): Promise<StreamPublisher> {
    const ch = await conn.createConfirmChannel();
    return new StreamPublisher(ch, streamName(source), stream, window);
  }

  /**
   * Capture's end of the log: a connection of its own, the stream declared, a publisher on it; close() ends both.
   * 64 messages unconfirmed at most (≤ 8 MB of chunks): 31k small messages/s here, against 14k with 16.
   * `created` says the stream was not there (see capture/prepare.ts streamLossWarning).
   */
  static async connect(rabbitUrl: string, source: string, retention: Retention, window = 64): Promise<StreamPublisher> {
    const conn = await connectRabbit(rabbitUrl);
    try {
      const identity = await declareStream(conn, source, retention);
      const p = new StreamPublisher(await conn.createConfirmChannel(), streamName(source), identity.id, window, conn);
      p.created = identity.created;
      await p.watch(conn);
      return p;
    } catch (err) {
      await conn.close().catch(() => undefined);
      throw err;
    }
  }

  /**
   * Publish one message; `onConfirm` runs once the broker has confirmed it,
   * `onNack` if it refused it (the publisher has then failed).
   * Waits while too many messages are unconfirmed (bounded memory).
   */
  async publish(m: TxnMessage, onConfirm: () => void, onNack?: () => void): Promise<void> {
    const body = encodeTxn(m.stream === this.stream ? m : { ...m, stream: this.stream });
    const headers = { 'pgferry-lsn': m.lsn, 'pgferry-seq': m.seq, 'pgferry-last': m.last, 'pgferry-stream': this.stream };
    await this.send(body, `${m.source}:${m.lsn}:${m.seq}`, headers, `transaction ${m.lsn}`, onConfirm, onNack);
  }

  /**
   * Publish a run: whole transactions, in commit order, as one message
   * (envelope version 4). Its header position is its first transaction's
   * (what a reader attaching at its offset must find at or below its own);
   * `pgferry-txns` says how many it holds.
   */
  async publishRun(txns: TxnMessage[], onConfirm: () => void, onNack?: () => void): Promise<void> {
    if (txns.length === 1) return this.publish(txns[0], onConfirm, onNack);
    const first = txns[0];
    const last = txns[txns.length - 1];
    const body = encodeTxnRun(txns.map((m) => (m.stream === this.stream ? m : { ...m, stream: this.stream })));
    const headers = { 'pgferry-lsn': first.lsn, 'pgferry-seq': 0, 'pgferry-last': true, 'pgferry-txns': txns.length, 'pgferry-stream': this.stream };
    await this.send(body, `${first.source}:${first.lsn}-${last.lsn}:run`, headers, `transactions ${first.lsn} to ${last.lsn}`, onConfirm, onNack);
  }

  private async send(body: Buffer, messageId: string, headers: Record<string, unknown>, what: string, onConfirm: () => void, onNack?: () => void): Promise<void> {
    this.check();
    while (this.unconfirmed >= this.window) await this.waitForProgress();
    this.unconfirmed += 1;
    const ok = this.ch.publish('', this.queue, body, { persistent: true, mandatory: true, contentType: 'application/json', messageId, headers }, (err) => {
      this.unconfirmed -= 1;
      if (err || this.failed) {
        // Refused, or returned as unroutable (its confirm still comes): not in the log.
        onNack?.();
        this.fail(new Error(`RabbitMQ did not confirm the message for ${what} (nack): ${String(err)}`));
      } else onConfirm();
      this.wake();
      if (this.unconfirmed < this.window) this.onRoom?.();
    });
    if (!ok) await this.drained();
  }

  /** Called when a confirm leaves room in the window (runs.ts publishes the run it holds then). */
  onRoom?: () => void;

  /** Room in the confirm window now: a message published would not wait for confirms (capture closes a run then). */
  get hasRoom(): boolean {
    return this.unconfirmed < this.window;
  }

  /**
   * Learn at once when the stream is deleted: RabbitMQ cancels the consumers
   * of a queue it deletes. Without this, a stream re-created under the same
   * name by another process would take this publisher's messages stamped
   * with the old identity. The watch never acknowledges, so RabbitMQ sends it
   * one message at most.
   */
  private async watch(conn: amqp.ChannelModel): Promise<void> {
    const ch = await conn.createChannel();
    this.watcher = ch;
    ch.on('error', () => undefined); // the publishing channel reports the connection's failures
    await ch.prefetch(1);
    await ch.consume(
      this.queue,
      (msg) => {
        if (!msg) this.fail(new UnavailableError(`the change stream ${this.queue} was deleted (RabbitMQ cancelled capture's watch on it); capture restarts and declares it again`));
      },
      { noAck: false, arguments: { 'x-stream-offset': 'next' } },
    );
  }

  /** The socket's buffer has room again — or the channel failed (closed, errored): then that error. */
  private drained(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.failed) return reject(this.failed);
      const onDrain = () => {
        this.failWaiters = this.failWaiters.filter((f) => f !== onFail);
        resolve();
      };
      const onFail = (e: Error) => {
        this.ch.removeListener('drain', onDrain);
        reject(e);
      };
      this.ch.once('drain', onDrain);
      this.failWaiters.push(onFail);
    });
  }

  /** Resolves once every message published so far is confirmed; throws if one was not. */
  async flush(): Promise<void> {
    while (this.unconfirmed > 0) await this.waitForProgress();
    this.check();
  }

  get pending(): number {
    return this.unconfirmed;
  }

  private check(): void {
    if (this.failed) throw this.failed;
  }

  private fail(e: Error): void {
    if (!this.failed) this.failed = e;
    const f = this.failWaiters;
    this.failWaiters = [];
    for (const w of f) w(this.failed);
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private waitForProgress(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.failed) return reject(this.failed);
      this.waiters.push(() => (this.failed ? reject(this.failed) : resolve()));
    });
  }

  async close(): Promise<void> {
    await this.watcher?.close().catch(() => undefined);
    await this.ch.close().catch(() => undefined);
    await this.own?.close().catch(() => undefined);
  }
}

/** What a reader buffers at most, in bytes, before it stops granting RabbitMQ more credit. */
export const DEFAULT_READER_BYTES = 64 * 1024 * 1024;

export interface StreamMessage {
  offset: number;
  body: Buffer;
  /** The body decoded ahead of time by the reader (StreamReader.decodeAhead), or why it could not be. */
  decoded?: { txns: TxnMessage[] } | { error: unknown };
  /** Commit LSN of the message's transaction (from its header, without decoding the body). */
  lsn?: string;
  /** The identity of the stream it was published to (header; absent in messages of older pgferry). */
  stream?: string;
}

/**
 * A stream message as the protocol reads it (protocol.ts LogMessage): its
 * body decoded once, when first read. `lines`: inserts written as COPY lines
 * stay lines (apply, which copies them as they are; the reader's
 * decodeAhead decodes them so too).
 */
export function logMessageOf(m: StreamMessage, lines = false): LogMessage {
  let decoded: TxnMessage[] | undefined;
  const ahead = m.decoded;
  const all = () => {
    if (decoded) return decoded;
    if (ahead && 'error' in ahead) throw ahead.error;
    return (decoded = ahead ? ahead.txns : decodeTxns(m.body, lines));
  };
  return { offset: m.offset, lsn: m.lsn, stream: m.stream, read: () => all()[0], readAll: all };
}

interface Delivered extends StreamMessage {
  msg: amqp.Message;
}

/**
 * Reads a stream from a given offset (or its first retained message): an
 * apply session keeps one from batch to batch (apply-batch.ts StreamFeed);
 * other readers open one, read what they need, and close it.
 */
export class StreamReader {
  private buffered: Delivered[] = [];
  /** Where the next message to take sits in `buffered` (taken ones are dropped in bulk, not shifted one by one). */
  private head = 0;
  /** Bytes of the messages delivered and not yet taken. */
  private bufferedBytes = 0;
  /** The last message taken and not yet acknowledged, and how many were taken since the last ack. */
  private unacked: amqp.Message | null = null;
  private unackedCount = 0;
  /** The reader's memory bound for buffered messages (besides the `prefetch` count). */
  maxBytes = DEFAULT_READER_BYTES;
  private waiter: (() => void) | null = null;
  private error: Error | null = null;
  private tag = '';
  /** Offset of the last message delivered (null: none yet). */
  lastOffset: number | null = null;
  /**
   * Decode-ahead (`decodeAhead`): buffered messages are decoded while the
   * event loop has nothing else to do — while the consumer waits on its
   * database — up to this many bytes of bodies ahead of the consumer
   * (0: off, each body is decoded when the consumer reads it).
   */
  private aheadBytes = 0;
  /** Index in `buffered` of the next message to decode ahead, and the bytes decoded and not yet taken. */
  private decodeAt = 0;
  private decodedBytes = 0;
  private pumping: NodeJS.Immediate | null = null;

  private constructor(
    private readonly ch: amqp.Channel,
    /** Acknowledge taken messages in groups of this many (one `multiple` ack), or when nothing is left to take. */
    private readonly ackEvery: number,
  ) {
    ch.on('error', (e: Error) => this.setError(e));
    ch.on('close', () => this.setError(new UnavailableError('RabbitMQ closed the stream channel (the connection dropped or the server is restarting)')));
  }

  /** `from` = first offset wanted, 'first' for the oldest retained message, 'last' for the newest chunk */
  static async open(conn: amqp.ChannelModel, source: string, from: number | 'first' | 'last', prefetch = 16): Promise<StreamReader> {
    const ch = await conn.createChannel();
    await ch.prefetch(prefetch);
    const r = new StreamReader(ch, Math.max(1, Math.floor(prefetch / 4)));
    const name = streamName(source);
    let consumerTag: string;
    try {
      ({ consumerTag } = await ch.consume(
        name,
        (msg) => {
          // RabbitMQ cancels the consumers of a stream it deletes (an operator, or a node that lost it).
          if (!msg) return r.setError(new UnavailableError(`RabbitMQ cancelled the reader of the change stream ${name} (the stream was deleted, or its node went away); reading resumes once it is back`));
          const headers = msg.properties.headers;
          const offset = Number(headers?.['x-stream-offset']);
          const lsn = headers?.['pgferry-lsn'];
          const stream = headers?.['pgferry-stream'];
          r.lastOffset = offset;
          r.buffered.push({ offset, body: msg.content, lsn: typeof lsn === 'string' ? lsn : undefined, stream: typeof stream === 'string' ? stream : undefined, msg });
          r.bufferedBytes += msg.content.length;
          r.wake();
          r.schedule();
        },
        { noAck: false, arguments: { 'x-stream-offset': from } },
      ));
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
      throw new UnavailableError(
        `the change stream ${name} of source '${source}' does not exist (deleted, or RabbitMQ lost its data); waiting for capture to create it again`,
        { cause: err },
      );
    }
    r.tag = consumerTag;
    return r;
  }

  /** Next message, or null if none arrives within `timeoutMs`. */
  async next(timeoutMs: number): Promise<StreamMessage | null> {
    if (this.head >= this.buffered.length && !this.error && timeoutMs > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          this.waiter = null;
          resolve();
        }, timeoutMs);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    const m = this.take();
    if (m) {
      this.bufferedBytes -= m.body.length;
      if (m.decoded) this.decodedBytes -= m.body.length;
      this.unacked = m.msg;
      this.unackedCount += 1;
      this.settle();
      this.schedule();
      return { offset: m.offset, body: m.body, lsn: m.lsn, stream: m.stream, decoded: m.decoded };
    }
    if (this.error) throw this.error;
    return null;
  }

  /** The oldest buffered message, if any; its slot is let go at once (its body may be large). */
  private take(): Delivered | undefined {
    if (this.head >= this.buffered.length) return undefined;
    const m = this.buffered[this.head];
    this.buffered[this.head++] = undefined as unknown as Delivered;
    if (this.decodeAt < this.head) this.decodeAt = this.head;
    if (this.head === this.buffered.length || this.head >= 1024) {
      this.buffered = this.buffered.slice(this.head);
      this.decodeAt -= this.head;
      this.head = 0;
    }
    return m;
  }

  /**
   * Decode buffered messages ahead of the consumer, in the event loop's idle
   * time (issue 27, item 3: apply reads and decodes the next transactions
   * while the replica runs the statements of the last ones). Decoding is
   * pure, so a message decoded ahead reads exactly as one decoded when
   * taken (as apply reads it: COPY lines stay lines, logMessageOf); one that
   * cannot be decoded carries its error to the consumer. At most `bytes` of
   * bodies are held decoded and not yet taken.
   */
  decodeAhead(bytes: number): void {
    this.aheadBytes = bytes;
    this.schedule();
  }

  private schedule(): void {
    if (this.pumping || !this.aheadBytes || this.error || this.decodeAt >= this.buffered.length || this.decodedBytes >= this.aheadBytes) return;
    this.pumping = setImmediate(() => this.pump());
  }

  /** One slice of decoding (about a millisecond, so a reply the consumer awaits is not held up), then yield. */
  private pump(): void {
    this.pumping = null;
    const until = performance.now() + 1;
    while (!this.error && this.decodeAt < this.buffered.length && this.decodedBytes < this.aheadBytes) {
      const m = this.buffered[this.decodeAt++];
      try {
        m.decoded = { txns: decodeTxns(m.body, true) }; // apply's reader: COPY lines stay lines
      } catch (error) {
        m.decoded = { error };
      }
      this.decodedBytes += m.body.length;
      if (performance.now() >= until) break;
    }
    this.schedule();
  }

  /**
   * Stream consumers ack only for flow control (credit); nothing is removed. Acking when a message is
   * taken, not when it arrives, keeps at most `prefetch` messages in memory, and holding the acks while
   * the buffer is over `maxBytes` stops RabbitMQ sending more (large messages). One `multiple` ack
   * per `ackEvery` messages (a quarter of the prefetch), also while a reader waits: its credit never
   * runs dry, since fewer than `ackEvery` taken messages are ever held unacked with nothing buffered,
   * and a reader keeping up with a live source sends one ack frame per `ackEvery` messages, not one
   * each (under W3 apply's acks, one per message, were 4% of its CPU in socket writes alone).
   */
  private settle(): void {
    if (!this.unacked || this.bufferedBytes >= this.maxBytes) return;
    if (this.unackedCount < this.ackEvery) return;
    const m = this.unacked;
    this.unacked = null;
    this.unackedCount = 0;
    try {
      this.ch.ack(m, true);
    } catch {
      /* channel closing: the reader is done */
    }
  }

  private setError(e: Error): void {
    this.error ??= e;
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  async close(): Promise<void> {
    this.error ??= new Error('reader closed');
    if (this.pumping) clearImmediate(this.pumping);
    this.pumping = null;
    if (this.tag) await this.ch.cancel(this.tag).catch(() => undefined);
    await this.ch.close().catch(() => undefined);
  }
}

/** One end of the retained part of a stream. */
export interface StreamEnd {
  offset: number;
  /** Commit LSN of the transaction that message belongs to. */
  lsn: string;
  commitTime: string;
  /** The source history of that transaction (absent in older messages). */
  history?: string;
  /** The identity of the stream (absent in messages of older pgferry). */
  stream?: string;
  /** It is the stream's marker (streamMarker), not a transaction. */
  marker?: boolean;
}

/**
 * The oldest and newest message the stream still holds (null when empty):
 * what a replica can still be rewound to, and how far retention has cut.
 */
export async function retainedRange(conn: amqp.ChannelModel, source: string): Promise<{ first: StreamEnd | null; last: StreamEnd | null }> {
  const end = (m: StreamMessage | null, which: 'first' | 'last'): StreamEnd | null => {
    if (!m) return null;
    const all = decodeTxns(m.body); // of a run: its first transaction at the oldest end, its last at the newest
    const t = which === 'first' ? all[0] : all[all.length - 1];
    const e: StreamEnd = { offset: m.offset, lsn: t.lsn, commitTime: t.commitTime, history: t.history, stream: m.stream ?? t.stream };
    if (isStreamMarker(t.lsn)) e.marker = true;
    return e;
  };
  const firstReader = await StreamReader.open(conn, source, 'first', 1);
  let first: StreamMessage | null;
  try {
    first = await firstReader.next(500);
  } finally {
    await firstReader.close();
  }
  if (!first) return { first: null, last: null };
  // 'last' starts at the newest chunk: read it to its end.
  const lastReader = await StreamReader.open(conn, source, 'last', 64);
  let last: StreamMessage | null = first;
  try {
    const until = Date.now() + 2000; // a busy stream keeps growing: the newest seen within 2 s will do
    for (let m = await lastReader.next(500); m && Date.now() < until; m = await lastReader.next(200)) if (m.offset >= last!.offset) last = m;
  } finally {
    await lastReader.close();
  }
  return { first: end(first, 'first'), last: end(last, 'last') };
}

/** Whether the stream holds changes, not only its marker(s) (a stream's markers come before its first change). */
export function holdsChanges(range: { first: StreamEnd | null; last: StreamEnd | null }): boolean {
  return !!range.last && !(range.first?.marker && range.last.marker);
}
