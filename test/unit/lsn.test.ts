import { describe, expect, it } from 'vitest';
import { compareLsn, formatLsn, lsnDistance, normalizeLsn, parseLsn } from '../../src/lsn';

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
  });

  it('measures distances, never negative', () => {
    expect(lsnDistance('0/FFFFFFFF', '1/0')).toBe(1);
    expect(lsnDistance('1/0', '0/0')).toBe(0);
  });

  it.each(['', '1', '1/', 'G/0', '1/2/3', '123456789/0'])('rejects %j', (bad) => {
    expect(() => parseLsn(bad)).toThrow(/not a PostgreSQL LSN/);
  });
});
