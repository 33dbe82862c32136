/**
 * The bytes of one change-log message. pgferry writes version 2 (one
 * transaction or chunk), version 4 (a run) and version 5 (a message holding
 * COPY lines), and reads versions 1 to 5, so a stream written by an older
 * pgferry is still read.
 *
 * Version 1 is the message model itself as JSON (change.ts): every row an
 * object naming its columns, every relation's columns as objects.
 *
 * Version 2 carries the same information in about half the bytes:
 *   { "v": 2, source, xid, lsn, endLsn, commitTime, seq, last, history?, gap?, stream?,
 *     "rels": "<JSON text of [[schema, table, identity, [[column, type, key 0|1], …]], …]>",
 *     "ch": [["i", rel, values] | ["u", rel, values, oldValues] | ["d", rel, oldValues]
 *            | ["t", [rel, …], cascade, restartIdentity]
 *            | ["s", { oid, command, before, after, fills, unfilled, error? }], …] }
 * `rel` is an index into `rels`; `values` follow the relation's columns, with
 * 0 (a number: never a value, which is text or null) where the row has no
 * such column (an unchanged TOAST value that was not sent, a column that is
 * not part of the old key) and trailing ones left out. `rels` is a string so
 * a reader can keep what it decoded of it: consecutive messages of the same
 * tables share one parse and one set of RelationInfo objects.
 *
 * A message whose rows name a column its relation does not describe cannot
 * be written in version 2 and is written in version 1 (capture never makes
 * one; hand-made messages in tests may).
 *
 * Version 3 is a run: consecutive whole source transactions in commit
 * order, in one message, each as version 2 writes it without the fields the
 * run carries once:
 *   { "v": 3, source, stream?, "run": [<version 2 object without v, source, stream>, …] }
 * A run is read as its transactions, each at the run's stream offset
 * (protocol.ts). Large transactions still travel as chunks, one per message.
 *
 * Version 4 is what pgferry writes for a run: version 3 with each distinct
 * `rels` text written once, for the run, and each transaction naming its own
 * by index:
 *   { "v": 4, source, stream?, "rels": ["<rels text>", …], "run": [<as in version 3, with "ri": index instead of "rels">, …] }
 * The transactions of a run mostly touch the same tables, and their
 * description was two thirds of a TPC-B transaction's bytes in version 3.
 *
 * Version 5 is what pgferry writes for a message holding inserts as COPY
 * lines (copy-lines.ts: the inserts of a large transaction, from capture):
 * bytes, not JSON text —
 *   0x00 (never the first byte of JSON), 0x05, UInt32BE n, n bytes of a version 2 object
 *   (with "v": 5), then the lines
 * — whose `ch` may hold ["c", rel, count, bytes]: `count` inserts into `rel`,
 * whose lines are the next `bytes` bytes after the object, in the order of
 * the "c" entries. Apply hands the lines to COPY as they are; every other
 * reader gets the same rows as if they had been written as values.
 */
import { Change, ENVELOPE_VERSION, RelationInfo, Row, SchemaChange, TxnMessage, Value, perRelation, relKey } from '../change';
import { ProtocolError } from '../errors';
import { LineInsert, LineSlices, isLineInsert, parseLine } from './copy-lines';

/** The version pgferry writes. */
export const WIRE_VERSION = ENVELOPE_VERSION;

const ABSENT = 0;
type Values = (Value | typeof ABSENT)[];
type WireRel = [schema: string, table: string, identity: RelationInfo['identity'], columns: [name: string, type: string, key: 0 | 1][]];
type WireChange =
  | ['i', number, Values]
  | ['u', number, Values, Values]
  | ['d', number, Values]
  | ['t', number[], boolean, boolean]
  | ['s', Omit<SchemaChange, 'op'>]
  | ['c', number, number, number];

/** The message's header fields as they are, its relations and changes in the compact form. */
type WireV2 = Omit<TxnMessage, 'v' | 'relations' | 'changes'> & { v: 2; rels: string; ch: WireChange[] };

/** The version pgferry writes a run in: several whole transactions in one message (it reads version 3 too). */
export const RUN_VERSION = 4;

type WireRun = { v: 3; source: string; stream?: string; run: Omit<WireV2, 'v' | 'source' | 'stream'>[] };
type WireRunShared = { v: 4; source: string; stream?: string; rels: string[]; run: (Omit<WireV2, 'v' | 'source' | 'stream' | 'rels'> & { ri: number })[] };

/** The version pgferry writes a message holding COPY lines in. */
export const LINES_VERSION = 5;

export function encodeMessage(m: TxnMessage): Buffer {
  if (m.changes.some(isLineInsert)) {
    const lines = new LineSlices();
    const w = toV2(m, lines);
    if (w && !lines.count) return Buffer.from(JSON.stringify(w)); // none could travel as a line
    if (w) {
      const header = Buffer.from(JSON.stringify({ ...w, v: LINES_VERSION }));
      const prefix = Buffer.allocUnsafe(6);
      prefix[0] = 0;
      prefix[1] = LINES_VERSION;
      prefix.writeUInt32BE(header.length, 2);
      return Buffer.concat([prefix, header, ...lines.slices()]);
    }
  }
  return Buffer.from(JSON.stringify(toV2(m) ?? { ...m, v: 1 }));
}

/**
 * A run of whole transactions (each `seq` 0 and `last`), in commit order, of
 * one source, as one message; a single transaction is written as itself.
 */
export function encodeRun(txns: TxnMessage[]): Buffer {
  if (txns.length === 1) return encodeMessage(txns[0]);
  if (!txns.length) throw new Error('a run holds at least one transaction');
  const run: WireRunShared['run'] = [];
  const rels: string[] = [];
  const relsIndex = new Map<string, number>();
  for (const m of txns) {
    if (m.seq !== 0 || !m.last || m.gap !== undefined) throw new Error(`transaction ${m.lsn}: only whole transactions travel in a run`);
    const w = toV2(m);
    if (!w) throw new Error(`transaction ${m.lsn} cannot be written in envelope version 2, so not in a run`);
    const { v: _v, source: _s, stream: _st, rels: text, ...rest } = w;
    let ri = relsIndex.get(text);
    if (ri === undefined) {
      relsIndex.set(text, (ri = rels.length));
      rels.push(text);
    }
    run.push({ ...rest, ri });
  }
  const out: WireRunShared = { v: RUN_VERSION, source: txns[0].source, rels, run };
  if (txns[0].stream !== undefined) out.stream = txns[0].stream;
  return Buffer.from(JSON.stringify(out));
}

/** The transaction (or chunk) a message holds; of a run, its first transaction. */
export function decodeMessage(body: Buffer): TxnMessage {
  return decodeMessages(body)[0];
}

/**
 * Every transaction (or the chunk) a message holds, in order: one, or a
 * run's. `lines`: inserts written as COPY lines stay lines (LineInsert: apply
 * copies them as they are); otherwise they are read as rows.
 */
export function decodeMessages(body: Buffer, lines = false): TxnMessage[] {
  if (body[0] === 0) return [fromV5(body, lines)];
  let w: { v?: unknown };
  try {
    w = JSON.parse(body.toString('utf8')) as { v?: unknown };
  } catch (err) {
    throw new ProtocolError(`a change-log message is not valid JSON (${(err as Error).message}); something other than pgferry wrote to the stream`, { cause: err });
  }
  if (w?.v === 1) return [w as TxnMessage];
  if (w?.v === 2) return [fromV2(w as WireV2)];
  if (w?.v === 3 || w?.v === 4) return fromRun(w as WireRun | WireRunShared);
  throw new ProtocolError(`unsupported change envelope version ${String(w?.v)} (this pgferry reads versions 1 to ${LINES_VERSION}); upgrade pgferry`);
}

function fromRun(w: WireRun | WireRunShared): TxnMessage[] {
  if (!Array.isArray(w.run) || !w.run.length) throw malformed('a run holds no transactions', w.v);
  if (w.v === 4 && (!Array.isArray(w.rels) || !w.rels.every((r) => typeof r === 'string'))) throw malformed('rels is not a list of texts', w.v);
  return w.run.map((t) => {
    // The run's source, stream and (version 4) relation texts are each transaction's: passed, not spread
    // into a copy of it (a run is read on apply's hot path).
    let rels = (t as WireV2).rels;
    if (w.v === 4) {
      rels = w.rels[(t as WireRunShared['run'][number]).ri];
      if (rels === undefined) throw malformed(`a transaction names relation set ${String((t as { ri?: unknown }).ri)}, which the run does not hold`, w.v);
    }
    const m = fromV2(t as WireV2, w.source, w.stream, rels, w.v);
    if (m.seq !== 0 || !m.last) throw malformed(`transaction ${m.lsn} of a run is not whole`, w.v);
    return m;
  });
}

/** Encoded `rels` of recent relation sets, by the identity of their RelationInfo objects (capture reuses them). */
const relsWritten = new WeakMap<RelationInfo, { with: RelationInfo[]; text: string }>();

/**
 * `m` in version 2's compact form; null if it cannot be. With `lines`, each
 * run of COPY-line inserts into one table is written as a "c" entry and its
 * lines are added to `lines`; without, they are written as values.
 */
function toV2(m: TxnMessage, lines?: LineSlices): WireV2 | null {
  const keys = Object.keys(m.relations);
  const index = new Map<string, number>();
  const rels = keys.map((k, i) => {
    index.set(k, i);
    return m.relations[k];
  });
  const ch: WireChange[] = [];
  // Whether a line's columns are its relation's, in order; capture's lines of one table share their
  // names, so the last names found to be relation `sameRel`'s are not compared again.
  let sameAs: readonly string[] | undefined;
  let sameRel = -1;
  const ownColumns = (c: LineInsert, i: number): boolean => {
    if (c.columns === sameAs && i === sameRel) return true;
    if (!sameNames(c.columns, rels[i].columns)) return false;
    sameAs = c.columns;
    sameRel = i;
    return true;
  };
  // The "c" entry the last line went to, and its line's table and column names: a bulk load's next
  // line (same table, same names) joins it without a lookup.
  let open: ['c', number, number, number] | null = null;
  let openRel = '';
  for (const c of m.changes) {
    if (open && isLineInsert(c) && c.rel === openRel && c.columns === sameAs) {
      open[2] += 1;
      open[3] += c.end - c.start;
      lines!.add(c);
      continue;
    }
    open = null;
    if (c.op === 'truncate') {
      const is = c.rels.map((k) => index.get(k));
      if (is.some((i) => i === undefined)) return null;
      ch.push(['t', is as number[], c.cascade, c.restartIdentity]);
      continue;
    }
    if (c.op === 'schema') {
      const { op: _op, ...rest } = c;
      ch.push(['s', rest]);
      continue;
    }
    const i = index.get(c.rel);
    if (i === undefined) return null;
    const cols = rels[i].columns;
    if (lines && isLineInsert(c) && ownColumns(c, i)) {
      const prev = ch[ch.length - 1];
      if (prev?.[0] === 'c' && prev[1] === i) {
        prev[2] += 1;
        prev[3] += c.end - c.start;
        open = prev;
      } else ch.push((open = ['c', i, 1, c.end - c.start]));
      openRel = c.rel;
      lines.add(c); // the lines follow the header in the order of the "c" entries: the order they come in
      continue;
    }
    if (c.op === 'insert') {
      const values = toValues(cols, c.new);
      if (!values) return null;
      ch.push(['i', i, values]);
    } else if (c.op === 'update') {
      const values = toValues(cols, c.new);
      const old = toValues(cols, c.old);
      if (!values || !old) return null;
      ch.push(['u', i, values, old]);
    } else {
      const old = toValues(cols, c.old);
      if (!old) return null;
      ch.push(['d', i, old]);
    }
  }
  const w: WireV2 = { v: 2, source: m.source, xid: m.xid, lsn: m.lsn, endLsn: m.endLsn, commitTime: m.commitTime, seq: m.seq, last: m.last, rels: relsText(rels), ch };
  if (m.history !== undefined) w.history = m.history;
  if (m.gap !== undefined) w.gap = m.gap;
  if (m.stream !== undefined) w.stream = m.stream;
  return w;
}

function relsText(rels: RelationInfo[]): string {
  const hit = rels.length ? relsWritten.get(rels[0]) : undefined;
  if (hit && hit.with.length === rels.length && hit.with.every((r, i) => r === rels[i])) return hit.text;
  const text = JSON.stringify(rels.map((r): WireRel => [r.schema, r.table, r.identity, r.columns.map((c) => [c.name, c.type, c.key ? 1 : 0])]));
  if (rels.length) relsWritten.set(rels[0], { with: rels, text });
  return text;
}

/** A row as values in column order; null if it names a column the relation does not have. */
function toValues(cols: RelationInfo['columns'], row: Row): Values | null {
  const out: Values = new Array(cols.length);
  let n = 0;
  let last = -1;
  for (let j = 0; j < cols.length; j++) {
    const name = cols[j].name;
    if (Object.prototype.hasOwnProperty.call(row, name)) {
      out[j] = row[name];
      n += 1;
      last = j;
    } else out[j] = ABSENT;
  }
  let keys = 0;
  for (const k in row) if (Object.prototype.hasOwnProperty.call(row, k)) keys += 1; // counted without allocating a key list (capture's hot path)
  if (n !== keys) return null;
  out.length = last + 1;
  return out;
}

/** What a reader decoded of recent `rels` texts (bounded; cleared when full). */
const relsRead = new Map<string, { keys: string[]; rels: RelationInfo[]; relations: Record<string, RelationInfo> }>();
const RELS_KEPT = 256;

function readRels(text: unknown, v = 2): { keys: string[]; rels: RelationInfo[]; relations: Record<string, RelationInfo> } {
  if (typeof text !== 'string') throw malformed('rels is not a string', v);
  const hit = relsRead.get(text);
  if (hit) return hit;
  let raw: WireRel[];
  try {
    raw = JSON.parse(text) as WireRel[];
  } catch (err) {
    throw malformed(`rels is not valid JSON (${(err as Error).message})`, v);
  }
  if (!Array.isArray(raw)) throw malformed('rels is not a list', v);
  const keys: string[] = [];
  const rels: RelationInfo[] = [];
  const relations: Record<string, RelationInfo> = {};
  for (const r of raw) {
    if (!Array.isArray(r) || typeof r[0] !== 'string' || typeof r[1] !== 'string' || !Array.isArray(r[3])) throw malformed('a relation is not [schema, table, identity, columns]', v);
    // Frozen: every message of these tables shares these objects (and toRow names values by them), so
    // a consumer that changed one — a handler sorting an event's columns — would garble later messages.
    const columns = Object.freeze(r[3].map(([name, type, key]) => Object.freeze({ name, type, key: key === 1 }))) as RelationInfo['columns'];
    const info: RelationInfo = Object.freeze({ schema: r[0], table: r[1], identity: r[2], columns });
    const k = relKey(info.schema, info.table);
    keys.push(k);
    rels.push(info);
    relations[k] = info;
  }
  Object.freeze(relations);
  if (relsRead.size >= RELS_KEPT) relsRead.clear();
  const out = { keys, rels, relations };
  relsRead.set(text, out);
  return out;
}

/** A version 5 message: its version 2 object, and the lines its "c" entries hold. */
function fromV5(body: Buffer, lines: boolean): TxnMessage {
  if (body.length < 6 || body[1] !== LINES_VERSION) {
    throw new ProtocolError(`unsupported change envelope version ${String(body[1])} (this pgferry reads versions 1 to ${LINES_VERSION}); upgrade pgferry`);
  }
  const n = body.readUInt32BE(2);
  let w: WireV2;
  try {
    w = JSON.parse(body.toString('utf8', 6, 6 + n)) as WireV2;
  } catch (err) {
    throw malformed(`its header is not valid JSON (${(err as Error).message})`, LINES_VERSION);
  }
  return fromV2(w, w.source, w.stream, w.rels, LINES_VERSION, { body, at: 6 + n, lines });
}

/** A version 2 object as a transaction; a run's transactions take `source` and `stream` from the run. */
function fromV2(
  w: WireV2,
  source = w.source,
  stream = w.stream,
  relsText: unknown = w.rels,
  v = 2,
  /** Version 5: the message's bytes, where its lines start, and whether to keep them as lines. */
  data?: { body: Buffer; at: number; lines: boolean },
): TxnMessage {
  const { keys, rels, relations } = readRels(relsText, v);
  if (!Array.isArray(w.ch)) throw malformed('ch is not a list', v);
  const rel = (i: unknown): RelationInfo => {
    const r = typeof i === 'number' ? rels[i] : undefined;
    if (!r) throw malformed(`a change names relation ${String(i)}, which the message does not describe`, v);
    return r;
  };
  const changes: Change[] = [];
  for (const c of w.ch) {
    if (c[0] === 'c') readLines(c, data, rel(c[1]), keys[c[1]], changes);
    else changes.push(fromWire(c));
  }
  if (data && data.at !== data.body.length) throw malformed(`${data.body.length - data.at} bytes follow its last line`, LINES_VERSION);
  function fromWire(c: WireChange): Change {
    switch (c[0]) {
      case 'i':
        return { op: 'insert', rel: keys[c[1]], new: toRow(rel(c[1]), c[2]) };
      case 'u': {
        const r = rel(c[1]);
        return { op: 'update', rel: keys[c[1]], old: toRow(r, c[3]), new: toRow(r, c[2]) };
      }
      case 'd':
        return { op: 'delete', rel: keys[c[1]], old: toRow(rel(c[1]), c[2]) };
      case 't':
        return { op: 'truncate', rels: c[1].map((i) => (rel(i), keys[i])), cascade: c[2], restartIdentity: c[3] };
      case 's':
        if (!c[1] || typeof c[1] !== 'object' || typeof c[1].oid !== 'number') throw malformed('a schema change is not { oid, command, before, after, … }');
        return { op: 'schema', ...c[1] };
      default:
        throw malformed(`unknown change kind ${JSON.stringify((c as unknown[])[0])}`);
    }
  }
  const m: TxnMessage = { v: 2, source, xid: w.xid, lsn: w.lsn, endLsn: w.endLsn, commitTime: w.commitTime, seq: w.seq, last: w.last, relations, changes };
  if (w.history !== undefined) m.history = w.history;
  if (w.gap !== undefined) m.gap = w.gap;
  if (stream !== undefined) m.stream = stream;
  return m;
}

/** The `count` lines of a "c" entry, from where the previous one ended: as LineInserts, or as rows. */
function readLines(c: WireChange, data: { body: Buffer; at: number; lines: boolean } | undefined, r: RelationInfo, key: string, out: Change[]): void {
  const [, , count, bytes] = c as ['c', number, number, number];
  if (!data) throw malformed('a change of kind "c" outside a version 5 message');
  const { body, at } = data;
  const end = at + bytes;
  if (!Number.isInteger(count) || !Number.isInteger(bytes) || count < 0 || bytes < 0 || end > body.length) throw malformed(`its lines for ${r.table} lie outside the message`, LINES_VERSION);
  const names = columnNames(r);
  let pos = at;
  for (let k = 0; k < count; k++) {
    const nl = body.indexOf(0x0a, pos);
    if (nl < 0 || nl >= end) throw malformed(`${r.table} has fewer lines than the ${count} it announces`, LINES_VERSION);
    out.push(data.lines ? new LineInsert(key, names, body, pos, nl + 1) : { op: 'insert', rel: key, new: parseLine(names, body, pos, nl + 1) });
    pos = nl + 1;
  }
  if (pos !== end) throw malformed(`the lines of ${r.table} do not fill the ${bytes} bytes announced`, LINES_VERSION);
  data.at = end;
}

/** A line's columns are its relation's, in order (capture writes it so; anything else is written as values). */
function sameNames(names: readonly string[], cols: RelationInfo['columns']): boolean {
  if (names.length !== cols.length) return false;
  for (let j = 0; j < names.length; j++) if (names[j] !== cols[j].name) return false;
  return true;
}

/** A relation's column names, kept with its frozen description (a reader shares it between messages). */
const columnNames = perRelation((r) => Object.freeze(r.columns.map((c) => c.name)));

function toRow(r: RelationInfo, values: Values): Row {
  if (!Array.isArray(values) || values.length > r.columns.length) throw malformed(`a row of ${r.table} does not match its ${r.columns.length} columns`);
  const row: Row = {};
  for (let j = 0; j < values.length; j++) if (values[j] !== ABSENT) row[r.columns[j].name] = values[j] as Value;
  return row;
}

const malformed = (what: string, v = 2) => new ProtocolError(`a change-log message of envelope version ${v} is malformed: ${what}; something other than pgferry wrote to the stream`);
