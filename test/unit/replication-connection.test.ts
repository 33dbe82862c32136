import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { CopyBothFramer, readCopyData } from '../../src/capture/wal/replication-connection';

/** One protocol message: type byte, Int32 length (itself included), body. */
function message(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head[0] = type.charCodeAt(0);
  head.writeUInt32BE(4 + body.length, 1);
  return Buffer.concat([head, body]);
}

type Event = { to: 'pg' | 'capture'; bytes: Buffer };

/** Feed `chunks`; what pg was given (adjacent forwards joined) and what capture was, in order. */
function run(chunks: Buffer[]): Event[] {
  const events: Event[] = [];
  const framer = new CopyBothFramer(
    (b) => {
      const last = events.at(-1);
      if (last?.to === 'pg') last.bytes = Buffer.concat([last.bytes, b]);
      else events.push({ to: 'pg', bytes: Buffer.from(b) });
    },
    (buf, start, end) => events.push({ to: 'capture', bytes: Buffer.from(buf.subarray(start, end)) }),
  );
  for (const c of chunks) framer.feed(c);
  return events;
}

/** Cut `all` at the given points (fractions of its length), as socket reads would. */
function cut(all: Buffer, at: number[]): Buffer[] {
  const points = [...new Set(at.map((f) => Math.floor(f * all.length)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const p of points) {
    if (p > from) out.push(all.subarray(from, p));
    from = Math.max(from, p);
  }
  out.push(all.subarray(from));
  return out;
}

const payload = fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a));
/** Messages the server may send inside the copy without ending it. */
const inCopy = fc.oneof(
  { weight: 8, arbitrary: payload.map((b) => ({ type: 'd', body: b })) },
  { weight: 1, arbitrary: payload.map((b) => ({ type: 'N', body: b })) },
  { weight: 1, arbitrary: payload.map((b) => ({ type: 'S', body: b })) },
);

describe('CopyBothFramer: the replication connection read by capture in front of node-postgres', () => {
  it('hands every CopyData of the copy to capture and every other message, whole and in order, to pg, however the reads cut them (property, 500 cases)', () => {
    fc.assert(
      fc.property(
        fc.array(payload, { maxLength: 4 }),
        fc.array(inCopy, { maxLength: 40 }),
        fc.constantFrom('c', 'E'),
        fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 30 }),
        fc.boolean(),
        (handshake, copy, end, cuts, big) => {
          const msgs: { type: string; body: Buffer }[] = [
            ...handshake.map((b) => ({ type: 'R', body: b })),
            { type: 'W', body: Buffer.from([0, 0, 0]) },
            ...copy,
            ...(big ? [{ type: 'd', body: Buffer.alloc(200_000, 7) }] : []),
            { type: end, body: Buffer.from('end') },
            // After the copy, pg owns everything, CopyData included.
            { type: 'd', body: Buffer.from('after') },
            { type: 'Z', body: Buffer.from('I') },
          ];
          const expected: Event[] = [];
          let copying = false;
          for (const m of msgs) {
            if (copying && m.type === 'd') expected.push({ to: 'capture', bytes: m.body });
            else {
              const bytes = message(m.type, m.body);
              const last = expected.at(-1);
              if (last?.to === 'pg') last.bytes = Buffer.concat([last.bytes, bytes]);
              else expected.push({ to: 'pg', bytes });
            }
            if (m.type === 'W') copying = true;
            if (m.type === 'c' || m.type === 'E' || m.type === 'Z') copying = false;
          }
          const all = Buffer.concat(msgs.map((m) => message(m.type, m.body)));
          // As hex: comparing Buffers byte by byte is slow in expect.
          const hex = (es: Event[]) => es.map((e) => `${e.to}:${e.bytes.toString('hex')}`);
          expect(hex(run(cut(all, cuts)))).toEqual(hex(expected));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('puts a message cut into one-byte reads together', () => {
    const all = Buffer.concat([message('W', Buffer.alloc(3)), message('d', Buffer.from('wxyz')), message('c', Buffer.alloc(0))]);
    const chunks = [...all].map((b) => Buffer.from([b]));
    expect(run(chunks).map((e) => [e.to, e.bytes.toString('latin1')])).toEqual([
      ['pg', message('W', Buffer.alloc(3)).toString('latin1')],
      ['capture', 'wxyz'],
      ['pg', message('c', Buffer.alloc(0)).toString('latin1')],
    ]);
  });

  it('reads XLogData and keepalives of a CopyData payload', () => {
    const seen: unknown[] = [];
    const h = { xlogData: (b: Buffer, s: number, e: number) => seen.push(['x', b.toString('latin1', s, e)]), keepalive: (lsn: string, reply: boolean) => seen.push(['k', lsn, reply]) };
    const x = Buffer.concat([Buffer.from('w'), Buffer.alloc(24), Buffer.from('BEGIN')]);
    const k = Buffer.alloc(18);
    k[0] = 0x6b;
    k.writeUInt32BE(0x1a, 1);
    k.writeUInt32BE(0x2b3c, 5);
    k[17] = 1;
    const both = Buffer.concat([Buffer.from('..'), x, k]);
    readCopyData(both, 2, 2 + x.length, h);
    readCopyData(both, 2 + x.length, both.length, h);
    expect(seen).toEqual([
      ['x', 'BEGIN'],
      ['k', '1A/2B3C', true],
    ]);
  });
});
