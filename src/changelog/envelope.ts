/**
 * The change-log envelope: the one place that builds, encodes and decodes
 * the messages of a source's stream. Both capture modes cut transactions
 * into chunks with `TxnChunker`; `init` writes gap markers with `gapMarker`;
 * every reader decodes with `decodeTxn` (the bytes themselves: wire.ts). The rules for reading the log in
 * order live next door, in `protocol.ts`.
 */
import { Change, ENVELOPE_VERSION, RelationInfo, Row, TxnMessage, relLabel } from '../change';
import { SourceError } from '../errors';
import { ZERO_LSN } from '../lsn';
import { decodeMessage, decodeMessages, encodeMessage, encodeRun } from './wire';
import { isLineInsert } from './copy-lines';

/**
 * Default bound on one chunk's values: a reader's prefetch of a few hundred
 * messages then stays within tens of MB. Under 128 KiB by enough for the
 * header and one more row, so a chunk travels in one AMQP frame (RabbitMQ's
 * default frame_max is 128 KiB): a message of two frames is copied once more
 * by each reader to join them (amqplib), 6% of apply's CPU in W1 at 128 KiB.
 */
export const CHUNK_BYTES = 120 * 1024;

export interface ChunkLimits {
  /** At most this many changes per chunk. */
  changes: number;
  /** A chunk ends once its values add up to about this many bytes. */
  bytes: number;
  /** One change larger than this cannot travel in one RabbitMQ message (its max_message_size): refused by name. */
  maxMessageBytes?: number;
}

/** Default bound on one message: below RabbitMQ 3.x's max_message_size (128 MiB), leaving room for JSON escaping. */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** A single change too large for one message of the log. */
export class OversizedChangeError extends SourceError {}

/** What every chunk of one transaction carries. */
export interface TxnHeader {
  source: string;
  xid: number;
  /** Commit position. */
  lsn: string;
  commitTime: string;
  /** The source history this position belongs to (see protocol.ts). */
  history?: string;
}

/** Bytes of a row's values and names: an estimate of its encoded size. */
export function rowBytes(row: Row | undefined): number {
  let n = 0;
  if (row) for (const k in row) n += k.length + (row[k]?.length ?? 0) + 6;
  return n;
}

/** Estimated encoded size of one change's values. */
export function changeBytes(ch: Change): number {
  if (isLineInsert(ch)) return ch.end - ch.start;
  if (ch.op === 'truncate') return 16 * ch.rels.length;
  if (ch.op === 'schema') return JSON.stringify(ch).length;
  return rowBytes(ch.op === 'delete' ? undefined : ch.new) + rowBytes(ch.op === 'insert' ? undefined : ch.old);
}

/**
 * Cuts one source transaction into ordered chunks bounded by changes AND
 * bytes. Feed its changes in order with `add` (which returns a full chunk
 * when one is ready), then `end` for the last chunk. Each chunk describes
 * the relations its own changes reference, so a reader needs nothing else.
 * Pure; the same changes with the same limits always give the same chunks.
 */
export class TxnChunker {
  private seq = 0;
  private changes: Change[] = [];
  private bytes = 0;
  private relations: Record<string, RelationInfo> = {};

  constructor(
    private readonly header: TxnHeader,
    private readonly limits: ChunkLimits,
    /** The description of a relation key used by a change. */
    private readonly relation: (key: string) => RelationInfo,
  ) {}

  /** Chunks emitted so far. */
  get emitted(): number {
    return this.seq;
  }

  /** Changes held in the open chunk. */
  get holding(): number {
    return this.changes.length;
  }

  add(change: Change): TxnMessage | null {
    let cut: TxnMessage | null = null;
    if (change.op === 'insert' || change.op === 'update' || change.op === 'delete') {
      // One table: the common case (a bulk load's every row), without a list of keys per change.
      const key = change.rel;
      const held = this.relations[key];
      if (held === undefined) this.relations[key] = this.relation(key);
      else if (this.changes.length) {
        const now = this.relation(key);
        if (!sameRelation(held, now)) {
          cut = this.emit('', false); // the table was altered within the transaction: as for a truncate's below
          this.relations[key] = now;
        }
      }
    } else if (change.op === 'truncate') {
      const keys = change.rels;
      // A table altered within the transaction: its changes from here on have another shape, so
      // they start a chunk of their own (a chunk describes each table once).
      if (this.changes.length && keys.some((k) => this.relations[k] !== undefined && !sameRelation(this.relations[k], this.relation(k)))) cut = this.emit('', false);
      for (const key of keys) this.relations[key] ??= this.relation(key);
    }
    const size = changeBytes(change);
    const max = this.limits.maxMessageBytes ?? MAX_MESSAGE_BYTES;
    if (size > max && change.op !== 'truncate' && change.op !== 'schema') {
      const r = this.relations[change.rel];
      const row = change.op === 'insert' ? change.new : change.old;
      const key = Object.fromEntries(r.columns.filter((c) => c.key && c.name in row).map((c) => [c.name, row[c.name]]));
      const big = Object.entries(change.op === 'delete' ? change.old : change.new)
        .filter(([, v]) => (v?.length ?? 0) > 1024 * 1024)
        .map(([k, v]) => `${k} ${v!.length} bytes`);
      throw new OversizedChangeError(
        `source '${this.header.source}': the ${change.op} of ${relLabel(r)} key ${JSON.stringify(key)} at source position ${this.header.lsn} is ${size} bytes ` +
          `(${big.join(', ') || 'many columns'}), more than one change-log message may hold (${max} bytes); capture stops here and loses nothing (the slot keeps it): ` +
          `raise batch.max_message_bytes (PGFERRY_MAX_MESSAGE_BYTES) and RabbitMQ's max_message_size together, then restart capture`,
      );
    }
    this.changes.push(change);
    this.bytes += size;
    if (cut) return cut; // the new chunk holds one change: it fills up with the next ones
    if (this.changes.length < this.limits.changes && this.bytes < this.limits.bytes) return null;
    return this.emit('', false);
  }

  /** The last chunk (possibly without changes), or null for a transaction that emitted nothing at all. */
  end(endLsn: string): TxnMessage | null {
    if (!this.changes.length && this.seq === 0) return null;
    return this.emit(endLsn, true);
  }

  private emit(endLsn: string, last: boolean): TxnMessage {
    const h = this.header;
    const m: TxnMessage = {
      v: ENVELOPE_VERSION,
      source: h.source,
      xid: h.xid,
      lsn: h.lsn,
      endLsn,
      commitTime: h.commitTime,
      seq: this.seq,
      last,
      relations: this.relations,
      changes: this.changes,
    };
    if (h.history) m.history = h.history;
    this.seq += 1;
    this.changes = [];
    this.bytes = 0;
    this.relations = {};
    return m;
  }
}

/** The same description of a table: names, identity and every column's name, type and key flag. */
function sameRelation(a: RelationInfo, b: RelationInfo): boolean {
  if (a === b) return true;
  if (a.schema !== b.schema || a.table !== b.table || a.identity !== b.identity || a.columns.length !== b.columns.length) return false;
  return a.columns.every((c, i) => c.name === b.columns[i].name && c.type === b.columns[i].type && c.key === b.columns[i].key);
}

/**
 * A gap marker: the log is missing source transactions before `lsn` (the
 * slot or the trigger capture state was lost and made anew). It carries no
 * changes; every consumer that reaches it stops for a resync.
 */
export function gapMarker(o: { source: string; lsn: string; reason: string; history?: string }): TxnMessage {
  const m: TxnMessage = {
    v: ENVELOPE_VERSION,
    source: o.source,
    xid: 0,
    lsn: o.lsn,
    endLsn: o.lsn,
    commitTime: new Date().toISOString(),
    seq: 0,
    last: true,
    relations: {},
    changes: [],
    gap: o.reason,
  };
  if (o.history) m.history = o.history;
  return m;
}

/**
 * A stream marker: the first message of a stream, written by whoever
 * created it (changelog/stream.ts declareStream), carrying the identity
 * every later message is stamped with. Its position is 0/0, below every
 * transaction, so every consumer skips it as already applied; the protocol
 * reads only its identity (protocol.ts).
 */
export function streamMarker(o: { source: string; stream: string }): TxnMessage {
  return {
    v: ENVELOPE_VERSION,
    source: o.source,
    xid: 0,
    lsn: ZERO_LSN,
    endLsn: ZERO_LSN,
    commitTime: new Date().toISOString(),
    seq: 0,
    last: true,
    relations: {},
    changes: [],
    stream: o.stream,
  };
}

/** Whether a message (or its header's position) is a stream marker: no transaction has position 0/0. */
export const isStreamMarker = (lsn: string | undefined): boolean => lsn === ZERO_LSN;

/** A message's bytes in the stream: envelope version 2, or 5 when it holds COPY lines (wire.ts). */
export function encodeTxn(m: TxnMessage): Buffer {
  return encodeMessage(m);
}

/**
 * Decode one stream message (version 1, 2 or 3): the transaction or chunk it
 * holds, or a run's first transaction. Anything pgferry cannot read is a
 * ProtocolError (retrying cannot help).
 */
export function decodeTxn(body: Buffer): TxnMessage {
  return decodeMessage(body);
}

/** Every transaction a message holds, in commit order: the one (or the chunk), or a run's; `lines`: keep COPY lines as lines (apply). */
export function decodeTxns(body: Buffer, lines = false): TxnMessage[] {
  return decodeMessages(body, lines);
}

/** A run of whole transactions as one message (envelope version 4, wire.ts). */
export function encodeTxnRun(txns: TxnMessage[]): Buffer {
  return encodeRun(txns);
}
