import type * as amqp from 'amqplib';
import { encodeTxn, TxnMessage } from '../change';
import { streamName } from '../names';

/**
 * The change log: one RabbitMQ stream per source (`pgferry.<source>.changes`),
 * written by capture with publisher confirms and read by every replica and
 * subscriber from its own offset. Streams are append-only and replayable;
 * consumers never remove anything, retention does.
 */
export interface Retention {
  /** x-max-length-bytes; 0 = unlimited. */
  maxBytes: number;
  /** x-max-age, e.g. "7D"; empty = unlimited. */
  maxAge: string;
}

export const DEFAULT_RETENTION: Retention = { maxBytes: 20 * 1024 ** 3, maxAge: '7D' };

export async function declareStream(conn: amqp.ChannelModel, source: string, retention: Retention = DEFAULT_RETENTION): Promise<string> {
  const name = streamName(source);
  const args: Record<string, unknown> = { 'x-queue-type': 'stream' };
  if (retention.maxBytes > 0) args['x-max-length-bytes'] = retention.maxBytes;
  if (retention.maxAge) args['x-max-age'] = retention.maxAge;
  const ch = await conn.createChannel();
  try {
    await ch.assertQueue(name, { durable: true, arguments: args });
  } finally {
    await ch.close().catch(() => undefined);
  }
  return name;
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

  private constructor(
    private readonly ch: amqp.ConfirmChannel,
    private readonly queue: string,
    private readonly window: number,
  ) {
    ch.on('error', (e: Error) => this.fail(e));
    ch.on('close', () => this.fail(new Error('RabbitMQ channel closed')));
  }

  static async open(conn: amqp.ChannelModel, source: string, window = 64): Promise<StreamPublisher> {
    const ch = await conn.createConfirmChannel();
    return new StreamPublisher(ch, streamName(source), window);
  }

  /**
   * Publish one message; `onConfirm` runs once the broker has confirmed it.
   * Waits while too many messages are unconfirmed (bounded memory).
   */
  async publish(m: TxnMessage, onConfirm: () => void): Promise<void> {
    this.check();
    while (this.unconfirmed >= this.window) await this.waitForProgress();
    this.unconfirmed += 1;
    const ok = this.ch.publish(
      '',
      this.queue,
      encodeTxn(m),
      {
        persistent: true,
        contentType: 'application/json',
        messageId: `${m.source}:${m.lsn}:${m.seq}`,
        headers: { 'pgferry-lsn': m.lsn, 'pgferry-seq': m.seq, 'pgferry-last': m.last },
      },
      (err) => {
        this.unconfirmed -= 1;
        if (err) this.fail(new Error(`RabbitMQ did not confirm the message for transaction ${m.lsn} (nack): ${String(err)}`));
        else onConfirm();
        this.wake();
      },
    );
    if (!ok) await new Promise<void>((resolve) => this.ch.once('drain', resolve));
  }

  get pending(): number {
    return this.unconfirmed;
  }

  private check(): void {
    if (this.failed) throw this.failed;
  }

  private fail(e: Error): void {
    if (!this.failed) this.failed = e;
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
    await this.ch.close().catch(() => undefined);
  }
}

export interface StreamMessage {
  offset: number;
  body: Buffer;
}

interface Delivered extends StreamMessage {
  ack: () => void;
}

/**
 * Reads a stream from a given offset (or its first retained message). Used
 * inside one apply batch: open, read what is there, close.
 */
export class StreamReader {
  private buffered: Delivered[] = [];
  private waiter: (() => void) | null = null;
  private error: Error | null = null;
  private tag = '';

  private constructor(private readonly ch: amqp.Channel) {
    ch.on('error', (e: Error) => this.setError(e));
    ch.on('close', () => this.setError(new Error('RabbitMQ channel closed')));
  }

  /** `from` = first offset wanted, or 'first' for the oldest retained message. */
  static async open(conn: amqp.ChannelModel, source: string, from: number | 'first', prefetch = 16): Promise<StreamReader> {
    const ch = await conn.createChannel();
    await ch.prefetch(prefetch);
    const r = new StreamReader(ch);
    const { consumerTag } = await ch.consume(
      streamName(source),
      (msg) => {
        if (!msg) return r.setError(new Error('the stream consumer was cancelled by RabbitMQ'));
        const offset = Number(msg.properties.headers?.['x-stream-offset']);
        // Stream consumers ack only for flow control (credit): acking when the message is taken,
        // not when it arrives, keeps at most `prefetch` messages in memory. Nothing is removed.
        const ack = () => {
          try {
            ch.ack(msg);
          } catch {
            /* channel closing: the reader is done */
          }
        };
        r.buffered.push({ offset, body: msg.content, ack });
        r.wake();
      },
      { noAck: false, arguments: { 'x-stream-offset': from } },
    );
    r.tag = consumerTag;
    return r;
  }

  /** Next message, or null if none arrives within `timeoutMs`. */
  async next(timeoutMs: number): Promise<StreamMessage | null> {
    if (!this.buffered.length && !this.error && timeoutMs > 0) {
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
    const m = this.buffered.shift();
    if (m) {
      m.ack();
      return { offset: m.offset, body: m.body };
    }
    if (this.error) throw this.error;
    return null;
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
    if (this.tag) await this.ch.cancel(this.tag).catch(() => undefined);
    await this.ch.close().catch(() => undefined);
  }
}
