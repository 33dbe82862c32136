/**
 * The replication connection of WAL capture: START_REPLICATION on a pg
 * client, with the copy stream's messages read by capture itself.
 *
 * node-postgres parses every protocol message into an object and emits it
 * twice, and pg-logical-replication then made an LSN string and a subarray
 * of each; at a million rows that was about 40% of capture's CPU (W1,
 * --cpu-prof). Here a framer sits in front of pg's parser on the socket:
 * once the server answers START_REPLICATION (CopyBothResponse), each
 * CopyData message is handed over as an offset into the bytes read, and
 * everything else — the handshake, an ErrorResponse, CopyDone and what
 * follows — goes to pg as it would have, so the START_REPLICATION query
 * still ends, or fails with the server's own error, through pg.
 * https://www.postgresql.org/docs/15/protocol-replication.html
 */
import pg from 'pg';
import { formatLsnHalves } from '../../lsn';

export interface ReplicationHandlers {
  /** One XLogData payload: the pgoutput message is bytes `start` to `end` of `buf` (valid for good: nothing reuses it). */
  xlogData(buf: Buffer, start: number, end: number): void;
  /** A primary keepalive: the server's WAL end, and whether it wants a reply now. */
  keepalive(walEnd: string, replyNow: boolean): void;
}

/** Protocol message types the framer looks at. */
const COPY_DATA = 0x64; // 'd'
const COPY_BOTH_RESPONSE = 0x57; // 'W'
const COPY_DONE = 0x63; // 'c'
const ERROR_RESPONSE = 0x45; // 'E'
const READY_FOR_QUERY = 0x5a; // 'Z'
const XLOG_DATA = 0x77; // 'w'
const KEEPALIVE = 0x6b; // 'k'
/** XLogData: 'w', WAL start, WAL end, send time (Int64 each), then the plugin's message. */
const XLOG_HEADER = 25;

/**
 * Splits the bytes read from the socket into protocol messages: CopyData
 * after CopyBothResponse to `copyData` (its payload, as bytes `start` to
 * `end` of a buffer), every other message — whole, in order — to `forward`.
 * A message cut by a read waits for the rest (pure; unit-tested).
 */
export class CopyBothFramer {
  private copying = false;
  /** Bytes of a message not yet complete, and how many it needs in all (0: its header is not complete either). */
  private partial: Buffer[] = [];
  private partialBytes = 0;
  private need = 0;

  constructor(
    private readonly forward: (bytes: Buffer) => void,
    private readonly copyData: (buf: Buffer, start: number, end: number) => void,
  ) {}

  feed(chunk: Buffer): void {
    let from = 0;
    if (this.partialBytes) {
      // Only the rest of the cut message is put together with it (a large message over many reads: once, when all of it is here).
      if (this.need === 0) from = this.take(chunk, 0, 5 - this.partialBytes);
      if (this.need === 0 && this.partialBytes >= 5) {
        const head = Buffer.concat(this.partial, this.partialBytes);
        this.partial = [head];
        this.need = 1 + head.readUInt32BE(1);
      }
      if (this.need === 0) return;
      from = this.take(chunk, from, this.need - this.partialBytes);
      if (this.partialBytes < this.need) return;
      const whole = Buffer.concat(this.partial, this.partialBytes);
      this.partial = [];
      this.partialBytes = 0;
      this.need = 0;
      this.scan(whole, 0);
    }
    const pos = this.scan(chunk, from);
    if (pos < chunk.length) {
      const rest = chunk.subarray(pos);
      this.partial = [rest];
      this.partialBytes = rest.length;
      this.need = rest.length >= 5 ? 1 + rest.readUInt32BE(1) : 0;
    }
  }

  /** Up to `bytes` of `chunk` from `from` into the partial message; where the chunk's unread bytes start. */
  private take(chunk: Buffer, from: number, bytes: number): number {
    const to = Math.min(chunk.length, from + bytes);
    if (to > from) {
      this.partial.push(chunk.subarray(from, to));
      this.partialBytes += to - from;
    }
    return to;
  }

  /** The whole messages of `buf` from `pos`, in order; where the first incomplete one starts. */
  private scan(buf: Buffer, pos: number): number {
    let passFrom = -1; // start of messages to forward, not yet forwarded
    while (buf.length - pos >= 5) {
      const type = buf[pos];
      const end = pos + 1 + buf.readUInt32BE(pos + 1);
      if (end > buf.length) break;
      if (this.copying && type === COPY_DATA) {
        if (passFrom >= 0) this.forward(buf.subarray(passFrom, pos));
        passFrom = -1;
        this.copyData(buf, pos + 5, end);
      } else {
        if (passFrom < 0) passFrom = pos;
        // CopyBothResponse starts the copy; CopyDone, an ErrorResponse or ReadyForQuery end it: pg takes over.
        // (A NoticeResponse or ParameterStatus within the copy does not end it.)
        if (type === COPY_BOTH_RESPONSE) this.copying = true;
        else if (type === COPY_DONE || type === ERROR_RESPONSE || type === READY_FOR_QUERY) this.copying = false;
      }
      pos = end;
    }
    if (passFrom >= 0) this.forward(buf.subarray(passFrom, pos));
    return pos;
  }
}

/** Reads one CopyData payload of the replication stream: XLogData or a keepalive (others are ignored, as the protocol allows). */
export function readCopyData(buf: Buffer, start: number, end: number, h: ReplicationHandlers): void {
  const kind = buf[start];
  if (kind === XLOG_DATA) h.xlogData(buf, start + XLOG_HEADER, end);
  else if (kind === KEEPALIVE) h.keepalive(formatLsnHalves(buf.readUInt32BE(start + 1), buf.readUInt32BE(start + 5)), buf[start + 17] !== 0);
}

type Socket = { on(e: 'data', f: (b: Buffer) => void): unknown; listeners(e: 'data'): ((b: Buffer) => void)[]; removeListener(e: 'data', f: (b: Buffer) => void): unknown; pause(): void; resume(): void };
type Connection = { stream: Socket; sendCopyFromChunk(b: Buffer): void };

/** Microseconds between the Unix epoch and PostgreSQL's (2000-01-01). */
const PG_EPOCH_US = 946_684_800_000_000n;

/**
 * One replication connection. `start` runs START_REPLICATION and settles
 * when the server ends the copy (resolves) or the connection fails (rejects
 * with pg's error, which capture classifies).
 */
export class ReplicationConnection {
  private client: pg.Client | null = null;
  private closing = false;

  constructor(private readonly config: pg.ClientConfig) {}

  async start(sql: string, h: ReplicationHandlers, onError: (err: Error) => void): Promise<void> {
    const client = new pg.Client({ ...this.config, replication: 'database' } as pg.ClientConfig);
    this.client = client;
    client.on('error', onError);
    await client.connect();
    const socket = this.connection()!.stream;
    // pg-protocol reads the socket with one 'data' listener; the framer goes in front of it.
    const [pgParse] = socket.listeners('data');
    if (!pgParse) throw new Error('pgferry: cannot read the replication connection (node-postgres reads its socket differently from what pgferry expects)');
    socket.removeListener('data', pgParse);
    const framer = new CopyBothFramer(pgParse, (buf, start, end) => readCopyData(buf, start, end, h));
    socket.on('data', (chunk) => framer.feed(chunk));
    // Every CopyData of the copy is the framer's: one that reached pg would be a change lost, so it stops capture.
    (this.connection() as unknown as { on(e: 'copyData', f: () => void): void }).on('copyData', () =>
      onError(new Error('pgferry: a replication message reached node-postgres instead of capture (a protocol message pgferry does not expect); capture restarts from the slot')),
    );
    try {
      await client.query(sql);
    } catch (err) {
      // Ending the connection ourselves ends the query with "Connection terminated": that is a stop, not a failure.
      if (!this.closing) throw err;
    }
  }

  /**
   * A standby status update: everything before `lsn` is written, flushed and
   * applied (the server takes the position as given: the first byte not yet
   * had).
   */
  acknowledge(lsn: bigint): void {
    const conn = this.connection();
    if (!conn || this.closing) return;
    const b = Buffer.alloc(34);
    b[0] = 0x72; // 'r'
    b.writeBigUInt64BE(lsn, 1);
    b.writeBigUInt64BE(lsn, 9);
    b.writeBigUInt64BE(lsn, 17);
    b.writeBigInt64BE(BigInt(Date.now()) * 1000n - PG_EPOCH_US, 25);
    b[33] = 0;
    conn.sendCopyFromChunk(b);
  }

  /** Stop reading (PostgreSQL waits), and read again. */
  pause(): void {
    this.connection()?.stream.pause();
  }

  resume(): void {
    this.connection()?.stream.resume();
  }

  async close(): Promise<void> {
    this.closing = true;
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => undefined);
  }

  private connection(): Connection | undefined {
    return (this.client as unknown as { connection?: Connection } | null)?.connection;
  }
}
