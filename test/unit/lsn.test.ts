import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { microsToIso } from '../../src/change';
import { compareLsn, formatLsn, formatLsnHalves, lsnDistance, normalizeLsn, parseLsn } from '../../src/lsn';

describe('LSN arithmetic', () => {
  it.each([
    ['0/0', 0n],
    ['0/16B3748', 0x16b3748n],
    ['16/B374D848', (0x16n << 32n) | 0xb374d848n],
    ['FFFFFFFF/FFFFFFFF', 0xffffffffffffffffn],
  ])('parses and formats %s', (text, value) => {
    expect(parseLsn(text)).toBe(value);
    expect(formatLsn(value)).toBe(text);
  });

  it('normalizes the zero-padded form pgoutput decoding produces', () => {
    expect(normalizeLsn('00000000/016B3748')).toBe('0/16B3748');
    expect(normalizeLsn('0000000a/0000000f')).toBe('A/F');
  });

  it('compares across the 32-bit boundary, not as strings', () => {
    expect(compareLsn('0/FFFFFFFF', '1/0')).toBe(-1);
    expect(compareLsn('A/0', '9/FFFFFFFF')).toBe(1);
    expect(compareLsn('1/10', '1/10')).toBe(0);
    expect(compareLsn('0/9', '0/10')).toBe(-1); // "0/9" > "0/10" as strings
    // Not an LSN, even where each character's code is one bit from a digit or a hex letter.
    for (const bad of ['\u00101/0', '0/\u0019', '0/G', '0/', '/1', '123456789/0', '0/1/2']) expect(() => compareLsn(bad, '0/1'), bad).toThrow(/not a PostgreSQL LSN/);
  });

  it('measures distances, never negative', () => {
    expect(lsnDistance('0/FFFFFFFF', '1/0')).toBe(1);
    expect(lsnDistance('1/0', '0/0')).toBe(0);
  });

  it.each(['', '1', '1/', 'G/0', '1/2/3', '123456789/0'])('rejects %j', (bad) => {
    expect(() => parseLsn(bad)).toThrow(/not a PostgreSQL LSN/);
    expect(() => compareLsn(bad, '0/0')).toThrow(/not a PostgreSQL LSN/);
    expect(() => normalizeLsn(bad)).toThrow(/not a PostgreSQL LSN/);
  });

  // compareLsn, normalizeLsn and formatLsnHalves work on the halves as numbers (no bigint, on the hot path):
  // each must agree with the 64-bit arithmetic, whatever the text's padding and case.
  const lsn64 = fc.bigInt({ min: 0n, max: 0xffffffffffffffffn });
  const spelled = (v: bigint, pad: boolean, lower: boolean) => {
    const [hi, lo] = [(v >> 32n).toString(16), (v & 0xffffffffn).toString(16)].map((h) => (pad ? h.padStart(8, '0') : h));
    const t = `${hi}/${lo}`;
    return lower ? t : t.toUpperCase();
  };
  it('compares and normalizes as 64-bit numbers (property)', () => {
    fc.assert(
      fc.property(lsn64, lsn64, fc.boolean(), fc.boolean(), fc.boolean(), (a, b, pad, lower, near) => {
        if (near) b = a + 1n > 0xffffffffffffffffn ? a : a + 1n; // neighbours, across the 32-bit boundary too
        const [x, y] = [spelled(a, pad, lower), spelled(b, !pad, !lower)];
        expect(compareLsn(x, y)).toBe(a < b ? -1 : a > b ? 1 : 0);
        expect(normalizeLsn(x)).toBe(formatLsn(a));
        expect(formatLsnHalves(Number(a >> 32n), Number(a & 0xffffffffn))).toBe(formatLsn(a));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('commit times', () => {
  /** The conversion as it was written with bigint division (for times after 1970). */
  const reference = (micros: bigint) => `${new Date(Number(micros / 1000n)).toISOString().slice(0, 19)}.${String(Number(micros % 1_000_000n)).padStart(6, '0')}Z`;
  it('converts microseconds since 1970 to ISO 8601 with six digits (property)', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 7_258_118_400_000_000n /* 2200-01-01 */ }), fc.integer({ min: 0, max: 3 }), (micros, step) => {
        // Consecutive commits share a second (the conversion keeps the last one's text): check a few in a row.
        for (let i = 0n; i <= BigInt(step); i++) expect(microsToIso(micros + i * 400_000n)).toBe(reference(micros + i * 400_000n));
      }),
      { numRuns: 2000 },
    );
    expect(microsToIso(1767225600000001n)).toBe('2026-01-01T00:00:00.000001Z');
  });
});
