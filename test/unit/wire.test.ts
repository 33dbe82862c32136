import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { relKey, type Change, type RelationInfo, type Row, type TxnMessage } from '../../src/change';
import { decodeMessage, decodeMessages, encodeMessage, encodeRun } from '../../src/changelog/wire';
import { ProtocolError } from '../../src/errors';

/** Random relations (hostile names included) and messages whose rows use any subset of their columns. */
const name = fc.oneof(fc.constantFrom('id', 'v', 'a b', 'Ü"x', '0', 'key'), fc.string({ minLength: 1, maxLength: 6 }));
const relation = fc
  .record({
    schema: name,
    table: name,
    identity: fc.constantFrom<RelationInfo['identity']>('default', 'full', 'nothing', 'index'),
    columns: fc.uniqueArray(fc.record({ name, type: fc.constantFrom('bigint', 'text', 'numeric(12,2)', 'jsonb'), key: fc.boolean() }), { minLength: 1, maxLength: 6, selector: (c) => c.name }),
  })
  .map((r) => r as RelationInfo);
const value = fc.oneof(fc.constant(null), fc.string({ maxLength: 8 }), fc.constantFrom('0', '', 'null', '"', '\u0000'));

function message(): fc.Arbitrary<TxnMessage> {
  return fc.uniqueArray(relation, { minLength: 0, maxLength: 4, selector: (r) => relKey(r.schema, r.table) }).chain((rels) => {
    const keys = rels.map((r) => relKey(r.schema, r.table));
    const row = (i: number): fc.Arbitrary<Row> =>
      fc.subarray(rels[i].columns.map((c) => c.name)).chain((cols) => fc.tuple(...cols.map(() => value)).map((vs) => Object.fromEntries(cols.map((c, j) => [c, vs[j]]))));
    const change: fc.Arbitrary<Change> = rels.length
      ? fc.integer({ min: 0, max: rels.length - 1 }).chain((i) =>
          fc.oneof(
            row(i).map((r): Change => ({ op: 'insert', rel: keys[i], new: r })),
            fc.tuple(row(i), row(i)).map(([o, n]): Change => ({ op: 'update', rel: keys[i], old: o, new: n })),
            row(i).map((r): Change => ({ op: 'delete', rel: keys[i], old: r })),
            fc.tuple(fc.subarray(keys, { minLength: 1 }), fc.boolean(), fc.boolean()).map(([ks, cascade, restartIdentity]): Change => ({ op: 'truncate', rels: ks, cascade, restartIdentity })),
          ),
        )
      : fc.constant<Change>({ op: 'truncate', rels: [], cascade: false, restartIdentity: false });
    return fc.record({
      head: fc.record({ xid: fc.nat(), seq: fc.nat(5), last: fc.boolean(), history: fc.option(fc.constant('pg:1:1:5'), { nil: undefined }), gap: fc.option(fc.constant('slot lost'), { nil: undefined }) }),
      changes: fc.array(change, { maxLength: 12 }).map((cs) => (rels.length ? cs : [])),
    }).map(({ head, changes }) => {
      const m: TxnMessage = { v: 2, source: 'main', xid: head.xid, lsn: '0/1A2B', endLsn: head.last ? '0/1A3B' : '', commitTime: '2026-01-01T00:00:00.123456Z', seq: head.seq, last: head.last, relations: Object.fromEntries(rels.map((r, i) => [keys[i], r])), changes };
      if (head.history) m.history = head.history;
      if (head.gap) m.gap = head.gap;
      return m;
    });
  });
}

describe('the wire format (envelope version 2)', () => {
  it('decodes to exactly the message it encoded, for any relations and rows with any subset of their columns (property)', () => {
    fc.assert(
      fc.property(message(), (m) => {
        const body = encodeMessage(m);
        expect(JSON.parse(body.toString()).v).toBe(2);
        expect(decodeMessage(body)).toEqual(m);
      }),
      { numRuns: 1000 },
    );
  });

  it('is about half the bytes of version 1 for a TPC-B transaction, and keeps one set of relation objects across messages of the same tables', () => {
    const col = (n: string, key = false) => ({ name: n, type: 'integer', key });
    const rels: RelationInfo[] = [
      { schema: 'public', table: 'pgbench_accounts', identity: 'default', columns: [col('aid', true), col('bid'), col('abalance'), { name: 'filler', type: 'character(84)', key: false }] },
      { schema: 'public', table: 'pgbench_history', identity: 'default', columns: [col('tid'), col('bid'), col('aid'), col('delta'), { name: 'mtime', type: 'timestamp without time zone', key: false }] },
    ];
    const [a, h] = rels.map((r) => relKey(r.schema, r.table));
    const m = (aid: number): TxnMessage => ({
      v: 2, source: 'main', xid: aid, lsn: `0/${aid}`, endLsn: `0/${aid + 1}`, commitTime: '2026-01-01T00:00:00.000000Z', seq: 0, last: true,
      relations: { [a]: rels[0], [h]: rels[1] },
      changes: [
        { op: 'update', rel: a, old: { aid: String(aid) }, new: { aid: String(aid), bid: '1', abalance: '-12', filler: ' '.repeat(84) } },
        { op: 'insert', rel: h, new: { tid: '3', bid: '1', aid: String(aid), delta: '-12', mtime: '2026-01-01 00:00:00' } },
      ],
    });
    const v1 = Buffer.from(JSON.stringify({ ...m(1), v: 1 })).length;
    expect(encodeMessage(m(1)).length).toBeLessThan(v1 * 0.65);
    const [x, y] = [decodeMessage(encodeMessage(m(1))), decodeMessage(encodeMessage(m(2)))];
    expect(x.relations[a]).toBe(y.relations[a]);
    expect(y.changes[0]).toEqual(m(2).changes[0]);
  });

  it('reads version 1 messages (streams written by an older pgferry) as they are', () => {
    const v1 = { v: 1, source: 'main', xid: 1, lsn: '0/10', endLsn: '0/11', commitTime: '2026-01-01T00:00:00.000000Z', seq: 0, last: true, relations: {}, changes: [] };
    expect(decodeMessage(Buffer.from(JSON.stringify(v1)))).toEqual(v1);
  });

  it('writes version 1 for a message whose rows name a column the relation does not describe (hand-made), so nothing is dropped', () => {
    const r: RelationInfo = { schema: 's', table: 't', identity: 'default', columns: [{ name: 'id', type: 'int', key: true }] };
    const m: TxnMessage = { v: 2, source: 'main', xid: 1, lsn: '0/10', endLsn: '0/11', commitTime: 'x', seq: 0, last: true, relations: { [relKey('s', 't')]: r }, changes: [{ op: 'insert', rel: relKey('s', 't'), new: { id: '1', extra: '2' } }] };
    const body = encodeMessage(m);
    expect(JSON.parse(body.toString()).v).toBe(1);
    expect(decodeMessage(body)).toEqual({ ...m, v: 1 });
  });

  it('refuses malformed version 2 messages with a ProtocolError that says so', () => {
    const bad = (w: object) => () => decodeMessage(Buffer.from(JSON.stringify({ v: 2, source: 'm', xid: 1, lsn: '0/1', endLsn: '0/1', commitTime: 'x', seq: 0, last: true, ...w })));
    expect(bad({ rels: '[]', ch: [['i', 0, ['1']]] })).toThrow(ProtocolError);
    expect(bad({ rels: '[]', ch: [['i', 0, ['1']]] })).toThrow(/version 2 is malformed: a change names relation 0/);
    expect(bad({ rels: 'nope', ch: [] })).toThrow(/rels is not valid JSON/);
    expect(bad({ rels: '[["s","t","default",[["id","int",1]]]]', ch: [['x', 0, []]] })).toThrow(/unknown change kind/);
    expect(bad({ rels: '[["s","t","default",[["id","int",1]]]]', ch: [['i', 0, ['1', '2']]] })).toThrow(/does not match its 1 columns/);
  });

  it('version 4, a run: decodes to exactly the whole transactions it encoded, in order; a single transaction is written as itself (property)', () => {
    const whole = message().map((m): TxnMessage => {
      const w: TxnMessage = { ...m, seq: 0, last: true, endLsn: '0/1A3B', stream: 'S1' };
      delete w.gap;
      return w;
    });
    fc.assert(
      fc.property(fc.array(whole, { minLength: 1, maxLength: 6 }), (txns) => {
        const body = encodeRun(txns);
        const w = JSON.parse(body.toString());
        expect(w.v).toBe(txns.length > 1 ? 4 : 2);
        expect(decodeMessages(body)).toEqual(txns);
        expect(decodeMessage(body)).toEqual(txns[0]);
        if (txns.length === 1) return;
        // Each distinct description once; and the same run as version 3 (each transaction its own `rels`, as pgferry wrote runs before) reads the same.
        expect(new Set(w.rels).size).toBe(w.rels.length);
        const v3 = { v: 3, source: w.source, stream: w.stream, run: w.run.map(({ ri, ...t }: { ri: number }) => ({ ...t, rels: w.rels[ri] })) };
        expect(decodeMessages(Buffer.from(JSON.stringify(v3)))).toEqual(txns);
      }),
      { numRuns: 500 },
    );
  });

  it('writes a run of transactions of the same tables with their description once', () => {
    const rel = { schema: 's', table: 't', identity: 'default' as const, columns: [{ name: 'id', type: 'integer', key: true }] };
    const t = (i: number): TxnMessage => ({ v: 2, source: 'm', xid: i, lsn: `0/${i}`, endLsn: `0/${i}`, commitTime: 'x', seq: 0, last: true, relations: { [relKey('s', 't')]: rel }, changes: [{ op: 'insert', rel: relKey('s', 't'), new: { id: String(i) } }] });
    const w = JSON.parse(encodeRun([t(1), t(2), t(3)]).toString());
    expect(w.rels).toHaveLength(1);
    expect(w.run.map((x: { ri: number; rels?: string }) => [x.ri, x.rels])).toEqual([[0, undefined], [0, undefined], [0, undefined]]);
  });

  it('refuses a run that is empty or holds part of a transaction, writing and reading', () => {
    const t = (seq: number, last: boolean): TxnMessage => ({ v: 2, source: 'm', xid: 1, lsn: '0/1', endLsn: '0/1', commitTime: 'x', seq, last, relations: {}, changes: [] });
    expect(() => encodeRun([])).toThrow(/at least one/);
    expect(() => encodeRun([t(0, true), t(0, false)])).toThrow(/only whole transactions travel in a run/);
    const run = (r: unknown) => () => decodeMessages(Buffer.from(JSON.stringify({ v: 3, source: 'm', run: r })));
    expect(run([])).toThrow(ProtocolError);
    expect(run([])).toThrow(/version 3 is malformed: a run holds no transactions/);
    expect(run([{ xid: 1, lsn: '0/1', endLsn: '', commitTime: 'x', seq: 1, last: true, rels: '[]', ch: [] }])).toThrow(/transaction 0\/1 of a run is not whole/);
    const run4 = (rels: unknown, r: unknown) => () => decodeMessages(Buffer.from(JSON.stringify({ v: 4, source: 'm', rels, run: r })));
    const whole = { xid: 1, lsn: '0/1', endLsn: '', commitTime: 'x', seq: 0, last: true, ch: [] };
    expect(run4(['[]'], [])).toThrow(/version 4 is malformed: a run holds no transactions/);
    expect(run4('[]', [{ ...whole, ri: 0 }])).toThrow(/version 4 is malformed: rels is not a list of texts/);
    expect(run4(['[]'], [{ ...whole, ri: 1 }])).toThrow(/version 4 is malformed: a transaction names relation set 1, which the run does not hold/);
    expect(run4(['nope'], [{ ...whole, ri: 0 }])).toThrow(/version 4 is malformed: rels is not valid JSON/);
    expect(run4(['[]'], [{ ...whole, ri: 0, seq: 1 }])).toThrow(/transaction 0\/1 of a run is not whole/);
    expect(run4(['[]'], [{ ...whole, ri: 0 }])()).toHaveLength(1);
  });
});
