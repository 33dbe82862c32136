/**
 * Inserted rows carried as lines of COPY's text format (issue 27, item 1:
 * a bulk path that does not materialise values).
 *
 * A large source transaction is mostly inserts, and every value of every row
 * used to become a JS string twice on its way: capture decoded pgoutput's
 * bytes into a row object and wrote it as JSON; apply parsed the JSON back
 * into a row object and wrote it as COPY text. Here capture turns pgoutput's
 * tuple bytes straight into the COPY line the replica will read (escaping
 * only backslash, tab, newline and carriage return, byte by byte: UTF-8
 * never uses those bytes inside a character), the log carries the lines as
 * bytes (envelope version 5, wire.ts), and apply hands a run of them to
 * COPY as they are. Nothing in between looks at a value.
 *
 * Anything else that wants the row — net-change apply, a refusal naming its
 * key, a subscriber, a one-row INSERT — reads `new`, which parses the line
 * once into exactly the row the text path gives: PostgreSQL's text form of
 * each column, or null. COPY text format:
 * https://www.postgresql.org/docs/15/sql-copy.html#id-1.9.3.55.9.2
 */
import type { Row } from '../change';
import { ProtocolError } from '../errors';

/**
 * One inserted row as its COPY text line: bytes `start` to `end` of `data`
 * (the newline included), the values of `columns` in order. It reads as the
 * change model's insert (`op`, `rel`, `new`); spread or JSON it gives the
 * row's values too.
 */
export class LineInsert {
  readonly op = 'insert' as const;
  private row: Row | undefined;

  constructor(
    readonly rel: string,
    /** The relation's column names, in the line's order. */
    readonly columns: readonly string[],
    readonly data: Buffer,
    readonly start: number,
    readonly end: number,
  ) {}

  /** The row's values, parsed from the line when first asked for. */
  get new(): Row {
    return (this.row ??= parseLine(this.columns, this.data, this.start, this.end));
  }

  toJSON(): { op: 'insert'; rel: string; new: Row } {
    return { op: 'insert', rel: this.rel, new: this.new };
  }
}

export const isLineInsert = (ch: unknown): ch is LineInsert => ch instanceof LineInsert;

const malformed = (what: string) =>
  new ProtocolError(`a change-log message of envelope version 5 is malformed: ${what}; something other than pgferry wrote to the stream`);

const TAB = 0x09;
const NL = 0x0a;
const CR = 0x0d;
const BACKSLASH = 0x5c;

/** One line's values as a row; `\N` alone is null. */
export function parseLine(columns: readonly string[], data: Buffer, start: number, end: number): Row {
  const row: Row = {};
  let pos = start;
  const stop = data[end - 1] === NL ? end - 1 : end;
  if (!columns.length) {
    if (stop !== start) throw malformed('a COPY line holds a field of a table without columns');
    return row;
  }
  for (let i = 0; i < columns.length; i++) {
    if (pos > stop) throw malformed(`a COPY line holds ${i} fields, its table has ${columns.length} columns`);
    let fieldEnd = data.indexOf(TAB, pos);
    if (fieldEnd < 0 || fieldEnd > stop) fieldEnd = stop;
    row[columns[i]] = field(data, pos, fieldEnd);
    pos = fieldEnd + 1;
  }
  if (pos <= stop) throw malformed(`a COPY line holds more fields than its table's ${columns.length} columns`);
  return row;
}

function field(data: Buffer, start: number, end: number): string | null {
  if (end - start === 2 && data[start] === BACKSLASH && data[start + 1] === 0x4e /* N */) return null;
  const text = data.toString('utf8', start, end);
  return text.includes('\\') ? text.replace(/\\(.)/gs, unescape) : text;
}

const unescape = (_: string, c: string): string => (c === 't' ? '\t' : c === 'n' ? '\n' : c === 'r' ? '\r' : c);

/**
 * Writes COPY lines into large shared buffers, so a line costs no
 * allocation of its own; the lines of one chunk mostly sit side by side in
 * one buffer and are sent as one slice (`lineSlices`).
 */
export class LineWriter {
  private buf = Buffer.allocUnsafe(0);
  private pos = 0;

  constructor(private readonly slabBytes = 256 * 1024) {}

  /**
   * pgoutput's TupleData at `at` of `msg` (Int16 count, then per column 'n',
   * or 't' Int32 length and the text) as the COPY line of an insert into
   * `rel`, whose columns are `columns`. 'u' (an unchanged TOAST value) and
   * 'b' (binary) cannot be written as a line: the caller decodes such a row
   * as text instead (null here). The message ends at `end` of `msg` (which
   * may hold more after it).
   */
  line(rel: string, columns: readonly string[], msg: Buffer, at: number, end = msg.length): LineInsert | null {
    const n = msg.readInt16BE(at);
    if (n !== columns.length) return null;
    // At most: every byte escaped, plus "\N" or a separator per column, plus the newline.
    this.room(2 * (end - at) + 3 * n + 1);
    const out = this.buf;
    const start = this.pos;
    let w = start;
    let p = at + 2;
    for (let i = 0; i < n; i++) {
      if (i > 0) out[w++] = TAB;
      const kind = msg[p++];
      if (kind === 0x74 /* t */) {
        const len = msg.readInt32BE(p);
        p += 4;
        const stop = p + len;
        // Byte by byte: values are mostly short, and a copy call per value cost more than this loop.
        // The same escaping as apply/sql-builder.ts copyField, on bytes (the property test holds them equal);
        // the four bytes escaped are all at most 13 or exactly 92, so most bytes pass two comparisons.
        for (; p < stop; p++) {
          const b = msg[p];
          if (b > CR && b !== BACKSLASH) out[w++] = b;
          else if (b === BACKSLASH || b === TAB || b === NL || b === CR) {
            out[w++] = BACKSLASH;
            out[w++] = b === BACKSLASH ? BACKSLASH : b === TAB ? 0x74 : b === NL ? 0x6e : 0x72;
          } else out[w++] = b;
        }
      } else if (kind === 0x6e /* n */) {
        out[w++] = BACKSLASH;
        out[w++] = 0x4e;
      } else {
        return null; // the line so far is abandoned: pos is not moved
      }
    }
    out[w++] = NL;
    this.pos = w;
    return new LineInsert(rel, columns, out, start, w);
  }

  private room(bytes: number): void {
    if (this.buf.length - this.pos >= bytes) return;
    this.buf = Buffer.allocUnsafe(Math.max(this.slabBytes, bytes));
    this.pos = 0;
  }
}

/**
 * Gathers lines, in order, as the slices of the buffers they sit in: each
 * run of lines side by side in one buffer is one slice.
 */
export class LineSlices {
  private readonly out: Buffer[] = [];
  private data: Buffer | null = null;
  private start = 0;
  private end = 0;
  /** Lines added. */
  count = 0;

  add(l: LineInsert): void {
    this.count += 1;
    if (l.data === this.data && l.start === this.end) {
      this.end = l.end;
      return;
    }
    if (this.data) this.out.push(this.data.subarray(this.start, this.end));
    this.data = l.data;
    this.start = l.start;
    this.end = l.end;
  }

  /** The slices of every line added. */
  slices(): Buffer[] {
    if (this.data) this.out.push(this.data.subarray(this.start, this.end));
    this.data = null;
    return this.out;
  }
}

/** The bytes of consecutive lines, each run of lines that sit side by side in one buffer as one slice. */
export function lineSlices(lines: readonly LineInsert[]): Buffer[] {
  const g = new LineSlices();
  for (const l of lines) g.add(l);
  return g.slices();
}
