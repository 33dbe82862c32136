/**
 * PostgreSQL log sequence numbers ("16/B374D848"): parsing, formatting and
 * arithmetic. LSNs are 64-bit, so they are carried as bigint in code and as
 * canonical strings (upper-case hex, no padding, like pg_lsn's output) in
 * messages, Temporal payloads and SQL parameters.
 */
export type Lsn = bigint;

const LSN_RE = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

export function parseLsn(text: string): Lsn {
  const m = LSN_RE.exec(text.trim());
  if (!m) throw new TypeError(`not a PostgreSQL LSN: ${JSON.stringify(text)} (expected the form 16/B374D848)`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export function formatLsn(lsn: Lsn): string {
  if (lsn < 0n || lsn > 0xffffffffffffffffn) throw new RangeError(`LSN out of range: ${lsn}`);
  const hi = lsn >> 32n;
  const lo = lsn & 0xffffffffn;
  return `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase()}`;
}

/** Canonical form of any LSN string ("00000000/016B3748" → "0/16B3748"). */
export function normalizeLsn(text: string): string {
  if (CANONICAL_RE.test(text)) return text;
  return formatLsn(parseLsn(text));
}

/** Already canonical: upper-case hex without leading zeros. */
const CANONICAL_RE = /^(?:0|[1-9A-F][0-9A-F]{0,7})\/(?:0|[1-9A-F][0-9A-F]{0,7})$/;

/** The canonical text of an LSN given as its two 32-bit halves (as the replication protocol sends it). */
export function formatLsnHalves(hi: number, lo: number): string {
  return `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase()}`;
}

/**
 * An LSN's halves as numbers (each below 2^32, so exact): compared without a
 * bigint or a regular expression, since capture and apply compare positions
 * for every transaction (the regex was 2.7% of apply's W3 profile).
 */
function halves(text: string): [number, number] {
  const slash = text.indexOf('/');
  const hi = slash >= 1 && slash <= 8 ? hexAt(text, 0, slash) : -1;
  const lo = hi >= 0 && text.length - slash - 1 >= 1 && text.length - slash - 1 <= 8 ? hexAt(text, slash + 1, text.length) : -1;
  if (lo < 0) return halves(formatLsn(parseLsn(text))); // surrounding blanks; anything else parseLsn names
  return [hi, lo];
}

/** The hex digits from..to of `s` as a number; -1 if one is not a hex digit. */
function hexAt(s: string, from: number, to: number): number {
  let v = 0;
  for (let i = from; i < to; i++) {
    const raw = s.charCodeAt(i);
    const c = raw | 0x20; // A-F become a-f
    const d = raw >= 0x30 && raw <= 0x39 ? raw - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

export function compareLsn(a: string, b: string): number {
  if (a === b) return 0;
  const [ah, al] = halves(a);
  const [bh, bl] = halves(b);
  return ah !== bh ? (ah < bh ? -1 : 1) : al < bl ? -1 : al > bl ? 1 : 0;
}

/** Bytes between two positions, never negative. */
export function lsnDistance(from: string, to: string): number {
  const d = parseLsn(to) - parseLsn(from);
  return d > 0n ? Number(d) : 0;
}

export const ZERO_LSN = '0/0';
