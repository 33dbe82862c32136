import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { relKey, type Change, type RelationInfo } from '../../src/change';
import { changeBytes, OversizedChangeError, TxnChunker, gapMarker, decodeTxn, encodeTxn } from '../../src/changelog/envelope';
import { ProtocolError } from '../../src/errors';

const rel: RelationInfo = {
  schema: 'public',
  table: 'docs',
  identity: 'default',
  columns: [
    { name: 'id', type: 'bigint', key: true },
    { name: 'body', type: 'text', key: false },
  ],
};
const key = relKey('public', 'docs');
const header = { source: 'main', xid: 7, lsn: '0/100', commitTime: '2026-01-01T00:00:00.000000Z', history: 'pg:1:1:5' };

describe('the envelope chunker', () => {
  it('cuts a transaction into chunks bounded by changes and by bytes, in order, losing and repeating nothing (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.string({ maxLength: 3000 }), { maxLength: 120 }),
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 100, max: 20_000 }),
        (bodies, maxChanges, maxBytes) => {
          const changes: Change[] = bodies.map((body, i) => ({ op: 'insert', rel: key, new: { id: String(i), body } }));
          const c = new TxnChunker(header, { changes: maxChanges, bytes: maxBytes }, () => rel);
          const out = changes.map((ch) => c.add(ch)).filter((m) => m !== null);
          const last = c.end('0/180');
          if (last) out.push(last);
          if (!changes.length) {
            expect(out).toEqual([]);
            return;
          }
          expect(out.flatMap((m) => m!.changes)).toEqual(changes);
          out.forEach((m, i) => {
            expect(m).toMatchObject({ seq: i, last: i === out.length - 1, lsn: '0/100', history: 'pg:1:1:5', endLsn: i === out.length - 1 ? '0/180' : '' });
            expect(m!.changes.length).toBeLessThanOrEqual(maxChanges);
            // Bytes: a chunk ends at the first change that reaches the bound.
            const before = m!.changes.slice(0, -1).reduce((n, ch) => n + changeBytes(ch), 0);
            expect(before).toBeLessThan(maxBytes);
            if (m!.changes.length) expect(m!.relations[key]).toEqual(rel);
          });
        },
      ),
      { numRuns: 500 },
    );
  });

  it('defect G: refuses a single change larger than a message may be, naming the table, key, size and the setting', () => {
    const c = new TxnChunker(header, { changes: 100, bytes: 128 * 1024, maxMessageBytes: 2 * 1024 * 1024 }, () => rel);
    const huge: Change = { op: 'insert', rel: key, new: { id: '42', body: 'x'.repeat(3 * 1024 * 1024) } };
    expect(() => c.add(huge)).toThrow(OversizedChangeError);
    expect(() => c.add(huge)).toThrow(
      /source 'main': the insert of public\.docs key \{"id":"42"\} at source position 0\/100 is \d+ bytes \(body 3145728 bytes\), more than one change-log message may hold \(2097152 bytes\); .*raise batch\.max_message_bytes \(PGFERRY_MAX_MESSAGE_BYTES\) and RabbitMQ's max_message_size/,
    );
  });

  it('writes gap markers with their history, and decodes what it encodes; another version is a ProtocolError', () => {
    const g = gapMarker({ source: 'main', lsn: '0/500', reason: 'slot lost', history: 'pg:1:2:5' });
    expect(decodeTxn(encodeTxn(g))).toEqual(g);
    expect(g).toMatchObject({ gap: 'slot lost', changes: [], last: true, seq: 0, history: 'pg:1:2:5' });
    expect(() => decodeTxn(Buffer.from('{"v":3}'))).toThrow(ProtocolError);
    expect(() => decodeTxn(Buffer.from('not json'))).toThrow(/not valid JSON/);
  });
});
