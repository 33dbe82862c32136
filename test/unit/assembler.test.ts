import { describe, expect, it } from 'vitest';
import type { Pgoutput } from 'pg-logical-replication';
import { TxnAssembler } from '../../src/capture/wal/assembler';
import { microsToIso, relKey } from '../../src/change';
import { decodePgoutput } from '../../src/capture/wal/pgoutput';
import { isLineInsert } from '../../src/changelog/copy-lines';
import { decodeMessages, encodeMessage } from '../../src/changelog/wire';

/** pgoutput messages as pg-logical-replication decodes them (with our text parsers). */
const rel = (oid: number, name: string, identity: Pgoutput.MessageRelation['replicaIdentity'] = 'default'): Pgoutput.MessageRelation => ({
  tag: 'relation',
  relationOid: oid,
  schema: 'public',
  name,
  replicaIdentity: identity,
  columns: [
    { name: 'id', flags: 1, typeOid: 20, typeMod: -1, typeSchema: null, typeName: null, parser: (x) => x },
    { name: 'body', flags: identity === 'full' ? 1 : 0, typeOid: 25, typeMod: -1, typeSchema: null, typeName: null, parser: (x) => x },
  ],
  keyColumns: ['id'],
});
const begin = (xid: number, lsn: string): Pgoutput.MessageBegin => ({ tag: 'begin', commitLsn: lsn, commitTime: 1767225600123456n, xid });
const commit = (lsn: string, end: string): Pgoutput.MessageCommit => ({ tag: 'commit', flags: 0, commitLsn: lsn, commitEndLsn: end, commitTime: 1767225600123456n });
const types = (oid: number) => ({ 20: 'bigint', 25: 'text' })[oid] ?? 'unknown';

function assembler(chunkChanges = 100) {
  return new TxnAssembler({ source: 'main', chunkChanges, typeName: types });
}

describe('TxnAssembler', () => {
  it('turns one source transaction into one message with its commit position and typed relations', () => {
    const a = assembler();
    const r = rel(1, 't');
    expect(a.push(begin(7, '00000000/01000000')).out).toEqual([]);
    a.push(r);
    a.push({ tag: 'insert', relation: r, new: { id: '1', body: 'x' } });
    a.push({ tag: 'update', relation: r, key: null, old: null, new: { id: '1', body: 'y' } });
    a.push({ tag: 'delete', relation: r, key: { id: '1' }, old: null });
    const { out, commit: info } = a.push(commit('00000000/01000000', '00000000/01000040'));
    expect(info).toEqual({ lsn: '0/1000000', endLsn: '0/1000040', commitTime: '2026-01-01T00:00:00.123456Z', chunks: 1 });
    expect(out).toHaveLength(1);
    const m = out[0];
    expect(m).toMatchObject({ v: 2, source: 'main', xid: 7, lsn: '0/1000000', endLsn: '0/1000040', seq: 0, last: true, commitTime: '2026-01-01T00:00:00.123456Z' });
    expect(m.relations[relKey('public', 't')].columns).toEqual([
      { name: 'id', type: 'bigint', key: true },
      { name: 'body', type: 'text', key: false },
    ]);
    expect(m.changes).toEqual([
      { op: 'insert', rel: relKey('public', 't'), new: { id: '1', body: 'x' } },
      // no old tuple: the identity did not change, and is taken from the new row
      { op: 'update', rel: relKey('public', 't'), old: { id: '1' }, new: { id: '1', body: 'y' } },
      { op: 'delete', rel: relKey('public', 't'), old: { id: '1' } },
    ]);
  });

  it('keeps the old key of an update that changes the primary key', () => {
    const a = assembler();
    const r = rel(1, 't');
    a.push(begin(1, '0/10'));
    a.push(r);
    a.push({ tag: 'update', relation: r, key: { id: '1' }, old: null, new: { id: '2', body: 'b' } });
    const { out } = a.push(commit('0/10', '0/20'));
    expect(out[0].changes[0]).toEqual({ op: 'update', rel: relKey('public', 't'), old: { id: '1' }, new: { id: '2', body: 'b' } });
  });

  it('splits a large transaction into ordered chunks, each with the commit position, the last one flagged', () => {
    const a = assembler(2);
    const r = rel(1, 't');
    a.push(begin(1, '0/100'));
    a.push(r);
    const chunks = [];
    for (let i = 1; i <= 5; i++) chunks.push(...a.push({ tag: 'insert', relation: r, new: { id: String(i), body: null } }).out);
    const end = a.push(commit('0/100', '0/180'));
    chunks.push(...end.out);
    expect(chunks.map((c) => [c.seq, c.last, c.changes.length, c.lsn])).toEqual([
      [0, false, 2, '0/100'],
      [1, false, 2, '0/100'],
      [2, true, 1, '0/100'],
    ]);
    expect(chunks.every((c) => c.relations[relKey('public', 't')])).toBe(true);
    expect(end.commit).toMatchObject({ lsn: '0/100', endLsn: '0/180', chunks: 3 });
  });

  it('publishes nothing for an empty transaction but still reports its position', () => {
    const a = assembler();
    a.push(begin(1, '0/100'));
    const { out, commit: info } = a.push(commit('0/100', '0/120'));
    expect(out).toEqual([]);
    expect(info).toMatchObject({ lsn: '0/100', endLsn: '0/120', chunks: 0 });
  });

  it('also ends a chunk at about chunkBytes of values, so wide rows make small messages', () => {
    const a = new TxnAssembler({ source: 'main', chunkChanges: 1000, chunkBytes: 1000, typeName: types });
    const r = rel(1, 't');
    a.push(begin(1, '0/100'));
    a.push(r);
    const chunks = [];
    for (let i = 1; i <= 10; i++) chunks.push(...a.push({ tag: 'insert', relation: r, new: { id: String(i), body: 'x'.repeat(300) } }).out);
    chunks.push(...a.push(commit('0/100', '0/120')).out);
    expect(chunks.map((c) => c.changes.length)).toEqual([4, 4, 2]); // ~310 bytes a row: the 4th passes 1000
    expect(chunks.map((c) => c.last)).toEqual([false, false, true]);
  });

  it('records truncate with its options and every relation', () => {
    const a = assembler();
    const r1 = rel(1, 'a');
    const r2 = rel(2, 'b');
    a.push(begin(1, '0/100'));
    a.push(r1);
    a.push(r2);
    a.push({ tag: 'truncate', cascade: true, restartIdentity: false, relations: [r1, r2] });
    const { out } = a.push(commit('0/100', '0/120'));
    expect(out[0].changes).toEqual([{ op: 'truncate', rels: [relKey('public', 'a'), relKey('public', 'b')], cascade: true, restartIdentity: false }]);
  });

  it('refuses changes outside a transaction', () => {
    const a = assembler();
    expect(() => a.push({ tag: 'insert', relation: rel(1, 't'), new: {} })).toThrow(/outside a transaction/);
  });

  it('formats commit times with all six fractional digits', () => {
    expect(microsToIso(1767225600000001n)).toBe('2026-01-01T00:00:00.000001Z');
  });

  it('carries a schema change in its place, and starts a chunk where the table changes shape within the transaction', () => {
    const a = new TxnAssembler({ source: 'main', chunkChanges: 100, typeName: types, schemaKey: 'k1' });
    const r = rel(1, 't');
    const wider: Pgoutput.MessageRelation = { ...r, columns: [...r.columns, { name: 'extra', flags: 0, typeOid: 25, typeMod: -1, typeSchema: null, typeName: null, parser: (x) => x }] };
    const shape = (cols: string[]) => ({ schema: 'public', table: 't', columns: cols.map((name, i) => ({ num: i + 1, name, type: i ? 'text' : 'bigint', notNull: i === 0, key: i === 0, generated: false })) });
    const described = { oid: '16400', command: 'ALTER TABLE', old: shape(['id', 'body']), new: shape(['id', 'body', 'extra']), fills: {}, unfilled: [], key: 'k1' };
    const message = (content: object, publications: string[]): Pgoutput.Message => ({
      tag: 'message', flags: 1, transactional: true, messageLsn: '0/15', prefix: 'pgferry.schema', content: Buffer.from(JSON.stringify({ ...content, publications })),
    });
    a.push(begin(3, '0/10'));
    a.push(r);
    a.push({ tag: 'insert', relation: r, new: { id: '1', body: 'x' } });
    a.push(message(described, ['pgferry_main']));
    a.push(message({ ...described, oid: '16401' }, ['pgferry_other'])); // another source's table: not ours
    // Any role may emit a logical message: one without the event trigger's key is never taken as a change to apply.
    a.push(message({ ...described, key: undefined, new: shape(['id']) }, ['pgferry_main']));
    a.push(wider);
    const cut = a.push({ tag: 'insert', relation: wider, new: { id: '2', body: 'y', extra: 'z' } }).out;
    const { out } = a.push(commit('0/10', '0/20'));
    const chunks = [...cut, ...out];
    expect(chunks.map((m) => [m.seq, m.last, m.changes.map((c) => c.op)])).toEqual([
      [0, false, ['insert', 'schema', 'schema']],
      [1, true, ['insert']],
    ]);
    expect(chunks[0].changes[1]).toMatchObject({ op: 'schema', oid: 16400, command: 'ALTER TABLE', before: shape(['id', 'body']), after: shape(['id', 'body', 'extra']) });
    expect(chunks[0].changes[2]).toMatchObject({ op: 'schema', before: null, after: null, error: expect.stringMatching(/does not carry the key of pgferry_schema_changes/) });
    expect(chunks[0].relations[relKey('public', 't')].columns.map((c) => c.name)).toEqual(['id', 'body']);
    expect(chunks[1].relations[relKey('public', 't')].columns.map((c) => c.name)).toEqual(['id', 'body', 'extra']);
  });

  it("leaves out pgferry's own bookkeeping tables (a FOR ALL TABLES publication sends them)", () => {
    const a = assembler();
    const own: Pgoutput.MessageRelation = { ...rel(9, 'table_shapes'), schema: 'pgferry' };
    a.push(begin(4, '0/30'));
    a.push(own);
    a.push({ tag: 'insert', relation: own, new: { id: '1', body: '{}' } });
    const { out, commit: info } = a.push(commit('0/30', '0/40'));
    expect(out).toEqual([]);
    expect(info?.chunks).toBe(0);
  });
});

describe("TxnAssembler: a large transaction's inserts as COPY lines", () => {
  const i16 = (n: number) => { const b = Buffer.alloc(2); b.writeInt16BE(n); return b; };
  const i32 = (n: number) => { const b = Buffer.alloc(4); b.writeInt32BE(n); return b; };
  const text = (s: string) => { const v = Buffer.from(s, 'utf8'); return Buffer.concat([Buffer.from('t'), i32(v.length), v]); };
  /** An INSERT as pgoutput sends it, decoded by capture's parser (the tuple is read on demand). */
  const insert = (relations: Map<number, Pgoutput.MessageRelation>, id: number, body: string | null) =>
    decodePgoutput(Buffer.concat([Buffer.from('I'), i32(1), Buffer.from('N'), i16(2), text(String(id)), body === null ? Buffer.from('n') : text(body)]), relations);

  function run(linesAfter?: number) {
    const a = new TxnAssembler({ source: 'main', chunkChanges: 100, typeName: types, linesAfter });
    const r = rel(1, 't');
    const relations = new Map([[1, r]]);
    const rows = Array.from({ length: 130 }, (_, i) => ({ id: String(i), body: i % 3 ? `a\tb\\c\n${i}` : null }));
    const out = [...a.push(begin(1, '0/10')).out];
    a.push(r);
    for (const row of rows) out.push(...a.push(insert(relations, Number(row.id), row.body)).out);
    out.push(...a.push(commit('0/10', '0/20')).out);
    return { out, rows };
  }

  it('from the 64th change on (batch.copy_lines_after), each reading as its row, in messages of envelope version 5', () => {
    const { out, rows } = run();
    const changes = out.flatMap((m) => m.changes);
    expect(changes.map((c) => isLineInsert(c))).toEqual(rows.map((_, i) => i >= 64));
    expect(changes.map((c) => (c as { new: unknown }).new)).toEqual(rows);
    expect(out.map((m) => encodeMessage(m)[0] === 0)).toEqual([true, true]); // two chunks, each holding lines
    expect(out.flatMap((m) => decodeMessages(encodeMessage(m))).flatMap((m) => m.changes)).toEqual(rows.map((row) => ({ op: 'insert', rel: relKey('public', 't'), new: row })));
  });

  it('never with batch.copy_lines_after 0 (readers older than envelope version 5)', () => {
    const { out, rows } = run(0);
    expect(out.flatMap((m) => m.changes).some((c) => isLineInsert(c))).toBe(false);
    expect(out.map((m) => encodeMessage(m)[0])).toEqual([0x7b, 0x7b]); // JSON
    expect(out.flatMap((m) => m.changes.map((c) => (c as { new: unknown }).new))).toEqual(rows);
  });
});
