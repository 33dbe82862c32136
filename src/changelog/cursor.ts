/**
 * Reading the change log in order, from a consumer's position, for consumers
 * that are not replicas (application subscribers, `pgferry tail`).
 *
 * A position is the last transaction a consumer finished (see protocol.ts).
 * The cursor yields the messages of every later transaction, chunk by chunk,
 * in order, exactly once each: the protocol skips re-sent transactions, and a
 * transaction whose chunks start again is announced with a `restart` so what
 * was seen of it can be discarded. It stops with a GapError or a
 * ProtocolError, never skipping, when the stream no longer holds the
 * position, is not the stream the position is in (deleted and re-created),
 * reaches a gap marker or breaks the protocol.
 */
import type { ChannelModel } from 'amqplib';
import type { TxnMessage } from '../change';
import { LogMessage, LogPosition, LogProtocol, START_OF_LOG } from './protocol';
import { logMessageOf, readerBehind, retainedRange, StreamReader, streamTip } from './stream';
import { UnavailableError } from '../errors';
import { streamName } from '../names';

export { START_OF_LOG };
export type { LogPosition };

/**
 * Where the log ends now: the newest message the stream holds (START_OF_LOG
 * when it is empty). A consumer starting here sees exactly what is published
 * after this call returns. (RabbitMQ's own 'next' offset is resolved some time
 * after the consumer is registered, so messages published right after could
 * be missed.)
 */
export async function endOfLog(rabbit: ChannelModel, source: string): Promise<LogPosition> {
  const { last } = await retainedRange(rabbit, source);
  return last ? { lsn: last.lsn, offset: last.offset, history: last.history ?? null, stream: last.stream ?? null } : START_OF_LOG;
}

export type CursorItem =
  /** One message of a transaction after the position: seq 0 first, `m.last` on its final one. */
  | { kind: 'chunk'; m: TxnMessage; offset: number }
  /** The open transaction is being sent again from its first chunk: forget what was seen of it. */
  | { kind: 'restart'; lsn: string };

export interface CursorOptions {
  /** Who reads, for messages: "subscriber 'search'". */
  consumer: string;
  /** What the consumer can do when changes are gone, appended to gap errors. */
  fix: string;
  prefetch?: number;
}

/** How long a cursor's reader may deliver nothing before it checks the stream for more (LogCursor.next). */
const IDLE_CHECK_MS = 10_000;

export class LogCursor {
  private pending: CursorItem | null = null;
  /** The rest of the message being read: a run's transactions not yet stepped. */
  private parts: LogMessage[] = [];
  /** Since when the reader has delivered nothing (null: it just did). */
  private idleSince: number | null = null;

  private constructor(
    private readonly reader: StreamReader,
    private readonly protocol: LogProtocol,
    private readonly rabbit: ChannelModel,
    private readonly source: string,
    private readonly consumer: string,
  ) {}

  static async open(rabbit: ChannelModel, source: string, from: LogPosition, o: CursorOptions): Promise<LogCursor> {
    // Read from the last message consumed, not the one after: finding it proves retention did not cut past it.
    const reader = await StreamReader.open(rabbit, source, from.offset ?? 'first', o.prefetch ?? 64);
    const protocol = new LogProtocol({ who: o.consumer, noun: 'subscriber', did: 'received', source, fix: o.fix }, from);
    try {
      // Is it the stream the position is in? (RabbitMQ attaches past a stream's end silently.)
      if (from.offset !== null || from.stream) {
        const gap = protocol.attach(await streamTip(rabbit, source, from.offset ?? undefined));
        if (gap) throw gap;
      }
    } catch (err) {
      await reader.close();
      throw err;
    }
    return new LogCursor(reader, protocol, rabbit, source, o.consumer);
  }

  /** True while a transaction has started but its last chunk has not been yielded. */
  get inTransaction(): boolean {
    return this.protocol.openLsn !== null;
  }

  /** The last transaction yielded whole (with the source history it belongs to). */
  get position(): LogPosition {
    return this.protocol.position;
  }

  /** The next item, or null if nothing arrives within `timeoutMs`. */
  async next(timeoutMs: number): Promise<CursorItem | null> {
    if (this.pending) {
      const p = this.pending;
      this.pending = null;
      return p;
    }
    const until = Date.now() + timeoutMs;
    for (;;) {
      let part = this.parts.shift();
      if (!part) {
        const msg = await this.reader.next(Math.max(0, until - Date.now()));
        if (!msg) {
          await this.checkIdle();
          return null;
        }
        this.idleSince = null;
        // A run's transactions one at a time: the consumer may stop between them (its position is then inside the run).
        this.parts = this.protocol.parts(logMessageOf(msg));
        part = this.parts.shift()!;
      }
      const step = this.protocol.step(part);
      const restart: CursorItem | null = step.discard ? { kind: 'restart', lsn: step.discard } : null;
      if (step.kind === 'gap' || step.kind === 'error') throw step.error;
      const item: CursorItem | null = step.kind === 'chunk' ? { kind: 'chunk', m: step.m, offset: step.offset } : null;
      if (restart) {
        this.pending = item;
        return restart;
      }
      if (item) return item;
    }
  }

  /**
   * A reader that delivered nothing for IDLE_CHECK_MS while the stream holds
   * more (or is another stream) has a consumer RabbitMQ stopped serving
   * without a cancel: a retried error, so the consumer opens a new cursor
   * from its position, instead of waiting in silence.
   */
  private async checkIdle(): Promise<void> {
    const now = Date.now();
    this.idleSince ??= now;
    if (now - this.idleSince < IDLE_CHECK_MS) return;
    this.idleSince = now;
    const behind = await readerBehind(this.rabbit, this.source, () => this.reader.lastOffset ?? this.protocol.position.offset ?? -1, this.protocol.position.stream ?? null);
    if (behind) {
      throw new UnavailableError(`${this.consumer}: its reader of the change stream ${streamName(this.source)} delivered nothing for ${IDLE_CHECK_MS / 1000} s though ${behind}; reading again from its position`);
    }
  }

  async close(): Promise<void> {
    await this.reader.close();
  }
}
