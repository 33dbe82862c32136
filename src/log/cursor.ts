import type { ChannelModel } from 'amqplib';
import { TxnMessage, decodeTxn } from '../change';
import { GapError } from '../errors';
import { checkContinuity } from './continuity';
import { compareLsn, ZERO_LSN } from '../lsn';
import { retainedRange, StreamReader } from './stream';

/**
 * Reading the change log in order, from a consumer's position, for consumers
 * that are not replicas (application subscribers, `pgferry tail`).
 *
 * A position is the last transaction a consumer finished: its commit LSN and
 * the stream offset of its last message (null: nothing consumed yet, read
 * from the first retained message). The cursor yields the messages of every
 * later transaction, chunk by chunk, in order, exactly once each: re-sent
 * transactions (capture restarted) are skipped, and a transaction whose
 * chunks start again is announced with a `restart` so what was seen of it can
 * be discarded. It stops with a GapError, never skipping, when the stream no
 * longer holds the position or reaches a gap marker.
 */
export interface LogPosition {
  lsn: string;
  offset: number | null;
}

export const START_OF_LOG: LogPosition = { lsn: ZERO_LSN, offset: null };

/**
 * Where the log ends now: the newest message the stream holds (START_OF_LOG
 * when it is empty). A consumer starting here sees exactly what is published
 * after this call returns. (RabbitMQ's own 'next' offset is resolved some time
 * after the consumer is registered, so messages published right after could
 * be missed.)
 */
export async function endOfLog(rabbit: ChannelModel, source: string): Promise<LogPosition> {
  const { last } = await retainedRange(rabbit, source);
  return last ? { lsn: last.lsn, offset: last.offset } : START_OF_LOG;
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

export class LogCursor {
  private open: { lsn: string; nextSeq: number } | null = null;
  private checked: boolean;
  private pending: CursorItem | null = null;
  /** The last transaction yielded whole. */
  private done: LogPosition;

  private constructor(
    private readonly reader: StreamReader,
    private readonly source: string,
    private readonly from: LogPosition,
    private readonly o: CursorOptions,
  ) {
    this.done = from;
    this.checked = from.offset === null;
  }

  static async open(rabbit: ChannelModel, source: string, from: LogPosition, o: CursorOptions): Promise<LogCursor> {
    // Read from the last message consumed, not the one after: finding it proves retention did not cut past it.
    const reader = await StreamReader.open(rabbit, source, from.offset ?? 'first', o.prefetch ?? 64);
    return new LogCursor(reader, source, from, o);
  }

  /** True while a transaction has started but its last chunk has not been yielded. */
  get inTransaction(): boolean {
    return this.open !== null;
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
      const msg = await this.reader.next(Math.max(0, until - Date.now()));
      if (!msg) return null;
      // RabbitMQ may start a consumer at the beginning of the chunk holding the offset asked for.
      if (this.from.offset !== null && msg.offset < this.from.offset) continue;
      if (!this.checked) {
        this.checked = true;
        checkContinuity({ who: this.o.consumer, noun: 'subscriber', did: 'received', source: this.source, fix: this.o.fix }, { offset: this.from.offset!, lsn: this.from.lsn }, msg);
        if (msg.offset === this.from.offset) continue; // the consumer finished it before
      }
      const m = decodeTxn(msg.body);
      let restart: CursorItem | null = null;
      if (this.open && (m.lsn !== this.open.lsn || m.seq === 0)) {
        restart = { kind: 'restart', lsn: this.open.lsn };
        this.open = null;
      }
      const item = this.accept(m, msg.offset);
      if (restart) {
        this.pending = item;
        return restart;
      }
      if (item) return item;
    }
  }

  private accept(m: TxnMessage, offset: number): CursorItem | null {
    if (compareLsn(m.lsn, this.done.lsn) <= 0) return null; // finished before, or re-sent after a capture restart
    if (m.gap) {
      throw new GapError(`${this.o.consumer}: ${m.gap} (stream offset ${offset}, position ${m.lsn}): source changes are missing from the log here; ${this.o.fix}`);
    }
    if (!this.open && m.seq !== 0) return null; // a stray later chunk of a transaction re-sent whole later
    if (this.open && m.seq !== this.open.nextSeq) {
      throw new Error(`stream of source '${this.source}': transaction ${m.lsn} chunk ${m.seq} arrived, expected ${this.open.nextSeq}`);
    }
    this.open ??= { lsn: m.lsn, nextSeq: 0 };
    this.open.nextSeq += 1;
    if (m.last) {
      this.open = null;
      this.done = { lsn: m.lsn, offset };
    }
    return { kind: 'chunk', m, offset };
  }

  async close(): Promise<void> {
    await this.reader.close();
  }
}
