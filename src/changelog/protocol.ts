/**
 * The rules for reading a source's change log in order: one pure state
 * machine that every consumer (replica apply, application subscribers,
 * `pgferry tail`) drives, message by message. It turns "(offset, message) +
 * the consumer's position" into one step — apply this chunk, skip it, the
 * log has a gap, or the log breaks the protocol — and says when what was
 * seen of an open transaction must be thrown away. The consumer keeps only
 * its reactions (savepoints and commits for a replica, handler calls for a
 * subscriber). No I/O.
 *
 * What the log promises (capture's side): each source transaction is one
 * message, or a transaction in a run (several whole transactions in one
 * message, read one by one at its offset: `parts`), or ordered chunks 0..n
 * (`last` on the final one), all carrying its commit position; positions only grow within a source history; a capture
 * that restarts re-sends from its acknowledged position, so a transaction
 * whose chunks stopped is sent again whole, from chunk 0, before anything
 * after it. Everything else — two captures publishing at once, a transaction
 * cut short and followed by a later one, a position from another history —
 * is a protocol break, and a consumer stops loudly instead of guessing.
 *
 * A position belongs to one stream: the stream's identity (stamped on every
 * message, changelog/stream.ts) is stored with it, and a message or an
 * attach that shows another identity is a gap — the stream was deleted and
 * re-created, so what the old one held after the position is gone. A
 * position stored without one (older pgferry) takes the identity of the
 * stream once reading has proved the stream is the one it was stored in
 * (the message at the stored offset found, holding what was consumed).
 *
 * The guarantee (tested as a property in test/unit/protocol.property.test.ts):
 * the transactions a consumer completes are the source's, each once, in
 * commit order, each whole — or the consumer stops with a GapError or a
 * ProtocolError.
 */
import type { TxnMessage } from '../change';
import { isStreamMarker } from './envelope';
import { GapError, ProtocolError } from '../errors';
import { compareLsn, ZERO_LSN } from '../lsn';
import { streamName } from '../names';

/**
 * A consumer's position: the last transaction it finished (commit LSN), the
 * stream offset of its last message (null: nothing consumed yet), the
 * source history that position belongs to (null: not known yet — adopted
 * from the first transaction finished), and the identity of the stream the
 * offset is in (null: not known yet — adopted once the stream is proved to
 * be the one the position was stored in).
 */
export interface LogPosition {
  lsn: string;
  offset: number | null;
  history?: string | null;
  stream?: string | null;
}

export const START_OF_LOG: LogPosition = { lsn: ZERO_LSN, offset: null, history: null, stream: null };

/** Who reads, for the messages of gaps and protocol breaks. */
export interface LogConsumer {
  /** "replica 'b'" */
  who: string;
  noun: 'replica' | 'subscriber';
  /** What the consumer does with changes: 'applied', 'received'. */
  did: string;
  source: string;
  /** What to do about a gap. */
  fix: string;
  /** Appended when retention removed what the consumer needed. */
  retentionHint?: string;
  /**
   * A consumer that has consumed nothing must find the stream's very first
   * message (offset 0): a replica holds the source as of the log's start.
   * Subscribers starting "from the beginning" take the first retained one.
   */
  needsLogStart?: boolean;
}

export type Step =
  /** Nothing to do with this message. */
  | { kind: 'skip'; discard?: string }
  /** Apply this chunk: seq 0 begins its transaction, `m.last` completes it (then `position` has moved to it). */
  | { kind: 'chunk'; m: TxnMessage; offset: number; discard?: string }
  /** Changes the consumer needs are missing from the log: stop (keeping what came before) for a resync. */
  | { kind: 'gap'; error: GapError; discard?: string }
  /** The log breaks the protocol: stop with the reason; retrying reads the same log again. */
  | { kind: 'error'; error: ProtocolError; discard?: string };

/**
 * A stream message as the protocol sees it: its offset, its commit LSN (of
 * a run, its first transaction's) and stream identity if the header carries
 * them, and its body decoded on demand: `read` gives the transaction or
 * chunk it holds (of a run, the first transaction), `readAll` every
 * transaction of a run (absent: the message is not one).
 */
export interface LogMessage {
  offset: number;
  lsn?: string;
  stream?: string;
  read: () => TxnMessage;
  readAll?: () => TxnMessage[];
}

/** What the stream holds at or after a consumer's stored offset when its reader attached (changelog/stream.ts streamTip). */
export interface StreamTip {
  offset: number;
  lsn?: string;
  stream?: string;
}

/** Two deliveries of one chunk: same transaction, position in it, and content. */
function sameChunk(a: TxnMessage, b: TxnMessage): boolean {
  return a.lsn === b.lsn && a.seq === b.seq && a.last === b.last && a.changes.length === b.changes.length && JSON.stringify(a.changes) === JSON.stringify(b.changes);
}

export class LogProtocol {
  private done: Required<LogPosition>;
  private checked: boolean;
  private open: { lsn: string; nextSeq: number; last: TxnMessage } | null = null;
  /** A transaction seen in part: it must arrive whole, from chunk 0, before anything after it is applied. */
  private owed: string | null = null;
  /**
   * A consumer that has consumed nothing, told which history it belongs to
   * (a replica set up for the source as it is now), skips other histories
   * until its own begins (every history begins with a marker message).
   */
  private before: boolean;

  constructor(
    private readonly c: LogConsumer,
    private readonly from: LogPosition,
  ) {
    this.done = { lsn: from.lsn, offset: from.offset, history: from.history ?? null, stream: from.stream ?? null };
    this.checked = from.offset === null && !c.needsLogStart;
    this.before = from.offset === null && !!from.history;
  }

  /** The last transaction completed (and the offset a consumer may store: it names a message of a finished transaction). */
  get position(): LogPosition {
    return { ...this.done };
  }

  /** Commit LSN of the transaction open (begun, not completed), if any. */
  get openLsn(): string | null {
    return this.open?.lsn ?? null;
  }

  /**
   * What to `step` for one stream message, in order: the message itself, or
   * each transaction of a run as a message at the run's offset. A run below
   * the stored offset is one message (already consumed, or a sign of
   * another stream). A consumer may stop between the parts: its position is
   * then inside the run (the run's offset, the last transaction completed),
   * and reading again from that offset skips the run's transactions at or
   * below it, as between messages.
   */
  parts(msg: LogMessage): LogMessage[] {
    if (!msg.readAll || (this.from.offset !== null && msg.offset < this.from.offset)) return [msg];
    let txns: TxnMessage[];
    try {
      txns = msg.readAll();
    } catch (err) {
      return [{ ...msg, read: () => { throw err; } }];
    }
    return txns.map((m) => ({ offset: msg.offset, lsn: m.lsn, stream: msg.stream, read: () => m }));
  }

  /**
   * The reader gave up waiting with a transaction open (its chunks stopped:
   * capture restarted mid-transaction). Returns its LSN, to be discarded; it
   * is owed, and comes again whole.
   */
  abandon(): string | null {
    const lsn = this.open?.lsn ?? null;
    if (lsn) this.owe(lsn);
    this.open = null;
    return lsn;
  }

  /**
   * The reader attached: `tip` is the first message at or after the stored
   * offset (or, without one, the newest; null: the stream is empty). RabbitMQ
   * attaches a consumer that asks for an offset past the end of a stream at
   * its end, without a word: a stream that does not reach the stored offset
   * is not the one it was stored in.
   */
  attach(tip: StreamTip | null): GapError | null {
    const stored = this.from.offset;
    if (stored !== null && (tip === null || tip.offset < stored)) {
      const holds = tip === null ? 'it is empty' : `its newest offset is ${tip.offset}`;
      return this.recreated(`${holds}, below offset ${stored}, the last this ${this.c.noun} consumed`);
    }
    if (tip) return this.otherStream(tip.offset, tip.stream);
    return null;
  }

  step(msg: LogMessage): Step {
    const stored = this.from.offset;
    const other = this.otherStream(msg.offset, msg.stream);
    if (other) return { kind: 'gap', error: other, discard: this.abandon() ?? undefined };
    // RabbitMQ may start a consumer at the beginning of the segment chunk holding the offset asked for.
    if (stored !== null && msg.offset < stored) {
      const gap = this.newerBelow(msg);
      return gap ? { kind: 'gap', error: gap } : { kind: 'skip' };
    }
    if (!this.checked) {
      this.checked = true;
      const gap = this.checkStart(msg);
      if (gap) return { kind: 'gap', error: gap };
      if (msg.offset === stored) {
        // Consumed before. A position stored without its history or stream takes the ones of that message.
        if (!this.done.history) this.adopt(() => msg.read());
        this.adoptStream(msg);
        return { kind: 'skip' };
      }
    }
    // Read in order from a proven start (or the consumer's first message): the stream's identity is the consumer's from now on.
    this.adoptStream(msg);
    let m: TxnMessage;
    try {
      m = msg.read();
    } catch (err) {
      const e = err instanceof ProtocolError ? err : new ProtocolError(String((err as Error)?.message ?? err), { cause: err });
      return { kind: 'error', error: new ProtocolError(`${this.c.who}: stream offset ${msg.offset}: ${e.message}`, { cause: err }), discard: this.abandon() ?? undefined };
    }

    // The first history seen is the consumer's, from then on.
    if (!this.done.history && m.history) this.done.history = m.history;
    if (this.before && m.history === this.done.history) this.before = false;
    // A transaction of another source history: positions there say nothing about ours.
    if (m.history && m.history !== this.done.history) {
      const discard = this.abandon() ?? undefined;
      // What the log holds before the consumer's own history begins is not for it.
      if (this.before) return { kind: 'skip', discard };
      return {
        kind: 'gap',
        discard,
        error: new GapError(
          `${this.c.who}: the log of source '${this.c.source}' continues with another source history at stream offset ${msg.offset} ` +
            `(${m.history}, position ${m.lsn}; this ${this.c.noun} ${this.c.did} ${this.done.history} up to ${this.done.lsn}): ` +
            `the source was re-created, restored, failed over or re-installed, so positions no longer compare; ${this.c.fix}`,
        ),
      };
    }

    let discard: string | undefined;
    if (this.open) {
      if (m.lsn === this.open.lsn && m.seq === this.open.nextSeq) return this.chunk(m, msg.offset);
      // The very chunk just applied, delivered again: nothing to do.
      if (m.lsn === this.open.lsn && m.seq === this.open.nextSeq - 1 && sameChunk(m, this.open.last)) return { kind: 'skip' };
      // A transaction finished before (an older capture's message among this one's): keep going. If a
      // re-send is starting, the open transaction's first chunk comes again and begins it anew.
      if (compareLsn(m.lsn, this.done.lsn) <= 0) return { kind: 'skip' };
      // Sent again from its first chunk, or cut short by something else: throw away what was seen.
      discard = this.abandon() ?? undefined;
    }

    if (compareLsn(m.lsn, this.done.lsn) <= 0) {
      // Finished before: a re-send after a capture restart, or a redelivery. The stored offset may
      // move over it — unless something is owed, which must then be read again from before it.
      if (!this.owed) this.done.offset = msg.offset;
      return { kind: 'skip', discard };
    }
    if (m.gap) {
      return {
        kind: 'gap',
        discard,
        error: new GapError(`${this.c.who}: ${m.gap} (stream offset ${msg.offset}, position ${m.lsn}): source changes are missing from the log here; ${this.c.fix}`),
      };
    }
    if (this.owed && compareLsn(m.lsn, this.owed) > 0) {
      return {
        kind: 'error',
        discard,
        error: new ProtocolError(
          `${this.c.who}: the log of source '${this.c.source}' is out of order at stream offset ${msg.offset}: transaction ${m.lsn} chunk ${m.seq} ` +
            `arrived before transaction ${this.owed} was delivered whole (did two captures of this source publish at once?); ` +
            `nothing after ${this.done.lsn} was ${this.c.did}; ${this.c.fix}`,
        ),
      };
    }
    if (m.seq !== 0) {
      // A later chunk of a transaction whose start this reader did not see: it comes again whole.
      this.owe(m.lsn);
      return { kind: 'skip', discard };
    }
    this.open = { lsn: m.lsn, nextSeq: 0, last: m };
    return { ...this.chunk(m, msg.offset), discard };
  }

  private chunk(m: TxnMessage, offset: number): Step & { kind: 'chunk' } {
    const open = this.open!;
    open.nextSeq += 1;
    open.last = m;
    if (m.last) {
      this.open = null;
      this.done = { lsn: m.lsn, offset, history: m.history ?? this.done.history, stream: this.done.stream };
      if (this.owed && compareLsn(m.lsn, this.owed) >= 0) this.owed = null;
    }
    return { kind: 'chunk', m, offset };
  }

  /** A message (or attach tip) of another stream than the consumer's. */
  private otherStream(offset: number, stream: string | undefined): GapError | null {
    const own = this.done.stream;
    if (!own || !stream || stream === own) return null;
    return this.recreated(`it is stream ${stream} at offset ${offset}, this ${this.c.noun}'s position is in stream ${own}`);
  }

  /**
   * A position stored without a stream identity (older pgferry): a message
   * below the stored offset, of the consumer's own source history, holding a
   * transaction it has not consumed, cannot be the old stream's (a position
   * only moves over finished transactions): the stream is a new one, shorter
   * than the old.
   */
  private newerBelow(msg: LogMessage): GapError | null {
    if (this.done.stream || !msg.stream || !this.from.history || msg.lsn === undefined || isStreamMarker(msg.lsn) || compareLsn(msg.lsn, this.from.lsn) <= 0) return null;
    let history: string | undefined;
    try {
      history = msg.read().history;
    } catch {
      return null; // not readable: reported when it is read as a message
    }
    if (history !== this.from.history) return null;
    return this.recreated(`it holds transaction ${msg.lsn} at offset ${msg.offset}, below offset ${this.from.offset}, the last this ${this.c.noun} consumed, at ${this.from.lsn}`);
  }

  /** A position without a stream identity takes this message's. */
  private adoptStream(msg: LogMessage): void {
    if (!this.done.stream && msg.stream) this.done.stream = msg.stream;
  }

  /** The gap of a stream deleted and re-created: what the old one held after the position is gone. */
  private recreated(detail: string): GapError {
    const c = this.c;
    return new GapError(
      `${c.who}: the change stream ${streamName(c.source)} of source '${c.source}' was deleted and re-created (or RabbitMQ lost its data; ${detail}): ` +
        `what the old stream held after this ${c.noun}'s position is gone; ${c.fix}`,
    );
  }

  private adopt(read: () => TxnMessage): void {
    try {
      this.done.history = read().history ?? null;
    } catch {
      /* not readable: reported when a message is */
    }
  }

  private owe(lsn: string): void {
    if (!this.owed || compareLsn(lsn, this.owed) < 0) this.owed = lsn;
  }

  /**
   * The first message read must be the one consumed last (or, for a
   * consumer that needs the log's start, offset 0), holding the transaction
   * consumed then. Offsets are not dense (RabbitMQ skips some where segments
   * roll over), so finding that message is the only proof that retention did
   * not cut past it; the same offset holding a later transaction means the
   * stream was deleted and re-created.
   */
  private checkStart(msg: LogMessage): GapError | null {
    const c = this.c;
    const stream = `the stream of source '${c.source}'`;
    const stored = this.from.offset;
    if (stored === null) {
      if (msg.offset > 0) {
        return new GapError(`${c.who}: ${stream} starts at offset ${msg.offset}, not 0: retention removed changes this ${c.noun} never ${c.did}; ${c.fix}`);
      }
      return null;
    }
    if (msg.offset > stored) {
      return new GapError(
        `${c.who}: ${stream} no longer holds offset ${stored}, the last this ${c.noun} consumed ` +
          `(the first retained is ${msg.offset}): retention removed changes this ${c.noun} may not have ${c.did}; ${c.fix}${c.retentionHint ?? ''}`,
      );
    }
    let lsn = msg.lsn;
    let history: string | undefined;
    if (lsn === undefined || this.from.history) {
      try {
        const m = msg.read();
        lsn = m.lsn;
        history = m.history;
      } catch {
        return null; // not readable: reported when it is read as a message
      }
    }
    const recreated = compareLsn(lsn, this.from.lsn) > 0 || (history !== undefined && this.from.history && history !== this.from.history);
    if (recreated) return this.recreated(`it holds transaction ${lsn} at offset ${stored}, where this ${c.noun} consumed one at or before ${this.from.lsn}`);
    return null;
  }
}
