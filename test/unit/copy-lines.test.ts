import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { relKey, type Change, type RelationInfo, type Row, type TxnMessage } from '../../src/change';
import { LineInsert, LineWriter, isLineInsert, lineSlices, parseLine } from '../../src/changelog/copy-lines';
import { decodeMessage, decodeMessages, encodeMessage } from '../../src/changelog/wire';
import { copyText } from '../../src/apply/sql-builder';
import { ProtocolError } from '../../src/errors';

/** pgoutput TupleData of a row (every value as text, 'n' for null), after `pad` bytes of something else. */
function tupleData(values: (string | null | { kind: 'u' | 'b' })[], pad = 3): Buffer {
  const parts: Buffer[] = [Buffer.alloc(pad, 0x49), Buffer.from([values.length >> 8, values.length & 0xff])];
  for (const v of values) {
    if (v === null) parts.push(Buffer.from('n'));
    else if (typeof v === 'object') parts.push(Buffer.from(v.kind), ...(v.kind === 'b' ? [Buffer.from([0, 0, 0, 1, 7])] : []));
    else {
      const b = Buffer.from(v, 'utf8');
      const len = Buffer.alloc(4);
      len.writeInt32BE(b.length);
      parts.push(Buffer.from('t'), len, b);
    }
  }
  return Buffer.concat(parts);
}

/** Values the text form can hold: anything but NUL, with COPY's special characters and look-alikes of its escapes weighted in. */
const value = fc.oneof(
  fc.constant(null),
  fc.string({ maxLength: 12 }).filter((s) => !s.includes('\u0000')),
  fc.constantFrom('', '\\', '\\N', 'N', '\t', '\n', '\r', '\\t', 'a\\\\b', 'ü€😀', '\r\n', ' '),
  fc.array(fc.constantFrom('\\', '\t', '\n', '\r', 'x', 'é', 'N', '.'), { maxLength: 10 }).map((cs) => cs.join('')),
);
const columnNames = fc.uniqueArray(fc.oneof(fc.constantFrom('id', 'a b', 'Ü"x', 'new'), fc.string({ minLength: 1, maxLength: 5 })), { minLength: 0, maxLength: 7 });

function lineOf(writer: LineWriter, cols: string[], row: Row, rel = 'r'): LineInsert {
  const buf = tupleData(cols.map((c) => row[c]));
  return writer.line(rel, cols, buf, 3)!;
}

describe('inserts carried as COPY lines', () => {
  it('writes exactly the COPY text the row path writes, and reads back exactly the row (property)', () => {
    const writer = new LineWriter(64); // small buffers: lines often start a new one
    fc.assert(
      fc.property(columnNames.chain((cols) => fc.tuple(fc.constant(cols), fc.array(fc.tuple(...cols.map(() => value)), { minLength: 1, maxLength: 5 }))), ([cols, rows]) => {
        for (const vs of rows) {
          const row: Row = Object.fromEntries(cols.map((c, i) => [c, vs[i]]));
          const l = lineOf(writer, cols, row);
          expect(l.data.toString('utf8', l.start, l.end)).toBe(copyText(cols, [row]));
          expect(parseLine(cols, l.data, l.start, l.end)).toEqual(row);
          expect(l.new).toEqual(row);
          expect(JSON.parse(JSON.stringify(l))).toEqual({ op: 'insert', rel: 'r', new: row });
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('leaves a tuple it cannot write as a line to the row path: an unchanged TOAST value, a binary value, another column count', () => {
    const w = new LineWriter();
    expect(w.line('r', ['a', 'b'], tupleData(['1', { kind: 'u' }]), 3)).toBeNull();
    expect(w.line('r', ['a', 'b'], tupleData(['1', { kind: 'b' }]), 3)).toBeNull();
    expect(w.line('r', ['a', 'b', 'c'], tupleData(['1', '2']), 3)).toBeNull();
    // What was abandoned is not part of the next line.
    const l = w.line('r', ['a', 'b'], tupleData(['x', null]), 3)!;
    expect(l.data.toString('utf8', l.start, l.end)).toBe('x\t\\N\n');
  });

  it('sends lines that sit side by side in one buffer as one slice, in order', () => {
    const w = new LineWriter(60);
    const lines = Array.from({ length: 9 }, (_, i) => lineOf(w, ['id', 'v'], { id: String(i), v: 'a\tb' }));
    const slices = lineSlices(lines);
    expect(slices.length).toBeGreaterThan(1); // 60-byte buffers: a few lines each
    expect(slices.length).toBeLessThan(lines.length);
    expect(Buffer.concat(slices).toString()).toBe(lines.map((_, i) => `${i}\ta\\tb\n`).join(''));
    // Out of order: nothing merged across the gap.
    expect(Buffer.concat(lineSlices([lines[1], lines[0]])).toString()).toBe('1\ta\\tb\n0\ta\\tb\n');
  });
});

describe('envelope version 5: a message holding COPY lines', () => {
  const rel = (table: string, cols: string[]): RelationInfo => ({ schema: 'public', table, identity: 'default', columns: cols.map((name, i) => ({ name, type: 'text', key: i === 0 })) });

  /** A chunk of a large transaction: random changes of two tables, the inserts (any of them, all columns) as lines. */
  const chunk = fc
    .tuple(
      fc.array(
        fc.tuple(fc.constantFrom(0, 1), fc.constantFrom('insert', 'insert', 'insert', 'update', 'delete', 'truncate'), fc.boolean(), fc.tuple(value, value, value)),
        { minLength: 1, maxLength: 30 },
      ),
      fc.boolean(),
    )
    .map(([specs, last]) => {
      const rels = [rel('a', ['id', 'v', 'w']), rel('we"ird', ['k', 'x y', 'z'])];
      const keys = rels.map((r) => relKey(r.schema, r.table));
      const writer = new LineWriter(256);
      const asRows: Change[] = [];
      const asLines: Change[] = [];
      for (const [t, op, line, vs] of specs) {
        const cols = rels[t].columns.map((c) => c.name);
        const row: Row = Object.fromEntries(cols.map((c, i) => [c, vs[i]]));
        let ch: Change;
        if (op === 'insert') ch = { op, rel: keys[t], new: row };
        else if (op === 'update') ch = { op, rel: keys[t], old: { [cols[0]]: 'k' }, new: row };
        else if (op === 'delete') ch = { op, rel: keys[t], old: { [cols[0]]: vs[0] } };
        else ch = { op: 'truncate', rels: [keys[t]], cascade: false, restartIdentity: false };
        asRows.push(ch);
        asLines.push(op === 'insert' && line ? lineOf(writer, cols, row, keys[t]) : ch);
      }
      const m = (changes: Change[]): TxnMessage => ({
        v: 2, source: 'main', xid: 7, lsn: '0/5A', endLsn: last ? '0/5B' : '', commitTime: '2026-01-01T00:00:00.000001Z', seq: 3, last,
        relations: Object.fromEntries(rels.map((r, i) => [keys[i], r])), changes,
      });
      return { rows: m(asRows), lines: m(asLines) };
    });

  it('reads as the same rows written as values, and keeps its lines for apply (property)', () => {
    fc.assert(
      fc.property(chunk, ({ rows, lines }) => {
        const body = encodeMessage(lines);
        const hasLines = lines.changes.some(isLineInsert);
        expect(body[0] === 0 && body[1] === 5).toBe(hasLines);
        expect(decodeMessage(body)).toEqual(rows);
        const kept = decodeMessages(body, true)[0];
        expect(kept.changes.map((c) => isLineInsert(c))).toEqual(lines.changes.map((c) => isLineInsert(c)));
        expect(JSON.parse(JSON.stringify(kept))).toEqual(JSON.parse(JSON.stringify(rows)));
      }),
      { numRuns: 1000 },
    );
  });

  it('writes a line whose columns are not its relation\'s, in order, as values: the row read back is the same', () => {
    const k = relKey('public', 'a');
    const w = new LineWriter();
    const swapped = lineOf(w, ['v', 'id'], { v: 'x\ty', id: '7' }, k);
    const m: TxnMessage = { v: 2, source: 'main', xid: 1, lsn: '0/1', endLsn: '', commitTime: 'x', seq: 0, last: false, relations: { [k]: rel('a', ['id', 'v']) }, changes: [swapped] };
    const body = encodeMessage(m);
    expect(body[0]).toBe(0x7b); // JSON: no line travels
    expect(decodeMessage(body).changes).toEqual([{ op: 'insert', rel: k, new: { id: '7', v: 'x\ty' } }]);
  });

  it('names a malformed version 5 message as such', () => {
    const r = rel('a', ['id', 'v']);
    const k = relKey('public', 'a');
    const w = new LineWriter();
    const m: TxnMessage = {
      v: 2, source: 'main', xid: 1, lsn: '0/1', endLsn: '', commitTime: 'x', seq: 1, last: false, relations: { [k]: r },
      changes: [lineOf(w, ['id', 'v'], { id: '1', v: 'a' }, k), lineOf(w, ['id', 'v'], { id: '2', v: null }, k)],
    };
    const body = encodeMessage(m);
    const bad = (b: Buffer) => () => decodeMessages(b);
    expect(bad(body.subarray(0, body.length - 1))).toThrow(ProtocolError); // the last line cut short
    expect(bad(Buffer.concat([body, Buffer.from('3\tc\n')]))).toThrow(/bytes follow its last line/);
    const other = Buffer.from(body);
    other[1] = 6;
    expect(bad(other)).toThrow(/unsupported change envelope version 6/);
    const header = Buffer.from(body);
    header[7] = 0x7d; // the header's JSON broken
    expect(bad(header)).toThrow(/header is not valid JSON/);
    // A line with a field too many or too few: named when read.
    const extra = Buffer.from(body.toString('latin1').replace('1\ta\n', '1\t\t\n'), 'latin1');
    expect(() => decodeMessages(extra)).toThrow(ProtocolError);
    expect(() => (decodeMessages(extra, true)[0].changes[0] as LineInsert).new).toThrow(ProtocolError);
  });
});
