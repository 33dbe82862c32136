import type { Pgoutput } from 'pg-logical-replication';
import { describe, expect, it } from 'vitest';
import { decodePgoutput } from '../../src/capture/wal/pgoutput';

/** pgoutput messages built byte by byte, as the walsender sends them (protocol 1). */
const u8 = (n: number) => Buffer.from([n]);
const i16 = (n: number) => { const b = Buffer.alloc(2); b.writeInt16BE(n); return b; };
const i32 = (n: number) => { const b = Buffer.alloc(4); b.writeInt32BE(n); return b; };
const i64 = (n: bigint) => { const b = Buffer.alloc(8); b.writeBigInt64BE(n); return b; };
const str = (s: string) => Buffer.concat([Buffer.from(s, 'utf8'), u8(0)]);
const ch = (c: string) => u8(c.charCodeAt(0));
const text = (s: string) => { const v = Buffer.from(s, 'utf8'); return Buffer.concat([ch('t'), i32(v.length), v]); };
const tuple = (...cols: Buffer[]) => Buffer.concat([i16(cols.length), ...cols]);

const RELATION = Buffer.concat([
  ch('R'), i32(16384), str('app'), str('Tbl "x"'), ch('d'), i16(3),
  u8(1), str('id'), i32(20), i32(-1),
  u8(0), str('body'), i32(25), i32(-1),
  u8(0), str('note'), i32(25), i32(-1),
]);

function decodeAll(...bufs: Buffer[]): Pgoutput.Message[] {
  const rels = new Map<number, Pgoutput.MessageRelation>();
  return bufs.map((b) => decodePgoutput(b, rels));
}

describe('pgoutput decoding', () => {
  it('reads BEGIN and COMMIT positions and times (microseconds since the Unix epoch)', () => {
    const [b, c] = decodeAll(
      Buffer.concat([ch('B'), i64(0x1_0000_0a00n), i64(1_000_000n), i32(742)]),
      Buffer.concat([ch('C'), u8(0), i64(0x1_0000_0a00n), i64(0x1_0000_0a38n), i64(1_000_000n)]),
    );
    expect(b).toEqual({ tag: 'begin', commitLsn: '1/A00', commitTime: 946_684_801_000_000n, xid: 742 });
    expect(c).toMatchObject({ tag: 'commit', commitLsn: '1/A00', commitEndLsn: '1/A38' });
  });

  it('keeps values as PostgreSQL text, nulls as null, multi-byte characters intact', () => {
    const [, ins] = decodeAll(RELATION, Buffer.concat([ch('I'), i32(16384), ch('N'), tuple(text('9007199254740993'), text('naïve → 東京'), ch('n'))]));
    expect(ins).toMatchObject({ tag: 'insert', new: { id: '9007199254740993', body: 'naïve → 東京', note: null } });
  });

  it('leaves an unchanged TOAST value out of the new row instead of writing NULL', () => {
    const [, upd] = decodeAll(RELATION, Buffer.concat([ch('U'), i32(16384), ch('N'), tuple(text('1'), ch('u'), text('n'))]));
    const row = (upd as Pgoutput.MessageUpdate).new;
    expect(row).toEqual({ id: '1', note: 'n' });
    expect('body' in row).toBe(false);
  });

  it('fills an unchanged TOAST value from the old tuple of a FULL-identity update', () => {
    const [, upd] = decodeAll(RELATION, Buffer.concat([ch('U'), i32(16384), ch('O'), tuple(text('1'), text('big'), ch('n')), ch('N'), tuple(text('1'), ch('u'), text('n'))]));
    expect(upd).toMatchObject({ old: { id: '1', body: 'big', note: null }, new: { id: '1', body: 'big', note: 'n' } });
  });

  it('reduces a key tuple to the identity columns', () => {
    const [, upd, del] = decodeAll(
      RELATION,
      Buffer.concat([ch('U'), i32(16384), ch('K'), tuple(text('1'), ch('n'), ch('n')), ch('N'), tuple(text('2'), text('b'), ch('n'))]),
      Buffer.concat([ch('D'), i32(16384), ch('K'), tuple(text('2'), ch('n'), ch('n'))]),
    );
    expect(upd).toMatchObject({ key: { id: '1' }, old: null, new: { id: '2', body: 'b', note: null } });
    expect(del).toMatchObject({ tag: 'delete', key: { id: '2' }, old: null });
    expect((upd as Pgoutput.MessageUpdate).key).toEqual({ id: '1' });
  });

  it('reads relation names with quotes, identity, key columns and TRUNCATE flags', () => {
    const [rel, tr] = decodeAll(RELATION, Buffer.concat([ch('T'), i32(1), u8(3), i32(16384)]));
    expect(rel).toMatchObject({ schema: 'app', name: 'Tbl "x"', replicaIdentity: 'default', keyColumns: ['id'] });
    expect(tr).toMatchObject({ tag: 'truncate', cascade: true, restartIdentity: true });
  });

  it('names the relation it does not know and the value kind it cannot read', () => {
    expect(() => decodeAll(Buffer.concat([ch('I'), i32(99), ch('N'), tuple(text('1'))]))).toThrow(/relation 99 before its RELATION/);
    // An insert's tuple is read when its row is asked for (capture may take it as a COPY line instead).
    const [, ins] = decodeAll(RELATION, Buffer.concat([ch('I'), i32(16384), ch('N'), tuple(ch('b'))]));
    expect(() => (ins as Pgoutput.MessageInsert).new).toThrow(/unsupported value kind b in app\.Tbl "x"\.id/);
  });
});
