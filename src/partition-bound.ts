/**
 * A partition's bound, as the source's catalog prints it (pg_get_expr of
 * relpartbound: `FOR VALUES FROM ('2026-01-01 00:00:00') TO (MAXVALUE)`,
 * `FOR VALUES IN ('a', NULL)`, `FOR VALUES WITH (modulus 4, remainder 0)`,
 * `DEFAULT`), read into values. Pure. A replica that mirrors the source's
 * partitioning creates and attaches partitions with a bound written back from
 * these values (each a quoted literal); one that does not removes a dropped,
 * detached or truncated partition's rows from its root with the condition
 * the bounds make, its values passed as parameters. The source's text is
 * never run: what does not read as a bound is refused.
 */
import { ProtocolError } from './errors';
import { escapeLiteral, ident } from './pg';

/** One value of a bound: a literal's text, NULL, or MINVALUE / MAXVALUE (range bounds). */
export type BoundValue = { literal: string } | { special: 'MINVALUE' | 'MAXVALUE' } | null;

export type Bound =
  | { kind: 'range'; from: BoundValue[]; to: BoundValue[] }
  | { kind: 'list'; values: BoundValue[] }
  | { kind: 'hash'; modulus: number; remainder: number }
  | { kind: 'default' };

/** One level of a partition's place: the key of the table it partitions, and its bound there. */
export interface BoundLevel {
  strategy: 'r' | 'l' | 'h';
  keys: string[] | null;
  bound: string;
}

type Token = { t: 'lit'; v: string } | { t: 'word'; v: string } | { t: 'p'; v: string };

function tokens(text: string): Token[] {
  const out: Token[] = [];
  const bad = () => new ProtocolError(`a partition bound from the source does not read as one: ${JSON.stringify(text)}`);
  for (let i = 0; i < text.length; ) {
    const ch = text[i];
    if (/\s/.test(ch)) {
      i++;
    } else if (ch === "'") {
      let v = '';
      for (i++; ; ) {
        if (i >= text.length) throw bad();
        if (text[i] === "'") {
          if (text[i + 1] === "'") {
            v += "'";
            i += 2;
            continue;
          }
          i++;
          break;
        }
        v += text[i++];
      }
      out.push({ t: 'lit', v });
    } else if (/[-0-9.]/.test(ch)) {
      const m = /^-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?/.exec(text.slice(i));
      if (!m) throw bad();
      out.push({ t: 'lit', v: m[0] });
      i += m[0].length;
    } else if (/[A-Za-z_]/.test(ch)) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(text.slice(i))!;
      out.push({ t: 'word', v: m[0].toUpperCase() });
      i += m[0].length;
    } else if ('(),'.includes(ch)) {
      out.push({ t: 'p', v: ch });
      i++;
    } else {
      throw bad();
    }
  }
  return out;
}

/** Read a bound as pg_get_expr prints it; a ProtocolError for anything else. */
export function parseBound(text: string): Bound {
  const ts = tokens(text);
  let i = 0;
  const bad = () => new ProtocolError(`a partition bound from the source does not read as one: ${JSON.stringify(text)}`);
  const word = (w: string) => {
    const t = ts[i++];
    if (!t || t.t !== 'word' || t.v !== w) throw bad();
  };
  const punct = (p: string) => {
    const t = ts[i++];
    if (!t || t.t !== 'p' || t.v !== p) throw bad();
  };
  const value = (): BoundValue => {
    const t = ts[i++];
    if (!t) throw bad();
    if (t.t === 'lit') return { literal: t.v };
    if (t.t === 'word' && t.v === 'NULL') return null;
    if (t.t === 'word' && (t.v === 'MINVALUE' || t.v === 'MAXVALUE')) return { special: t.v };
    if (t.t === 'word' && (t.v === 'TRUE' || t.v === 'FALSE')) return { literal: t.v.toLowerCase() };
    throw bad();
  };
  const list = (): BoundValue[] => {
    punct('(');
    const vs = [value()];
    while (ts[i]?.t === 'p' && ts[i].v === ',') {
      i++;
      vs.push(value());
    }
    punct(')');
    return vs;
  };
  const number = (): number => {
    const t = ts[i++];
    if (!t || t.t !== 'lit' || !/^\d+$/.test(t.v)) throw bad();
    return Number(t.v);
  };
  let out: Bound;
  if (ts[0]?.t === 'word' && ts[0].v === 'DEFAULT') {
    i = 1;
    out = { kind: 'default' };
  } else {
    word('FOR');
    word('VALUES');
    const how = ts[i++];
    if (how?.t === 'word' && how.v === 'FROM') {
      const from = list();
      word('TO');
      out = { kind: 'range', from, to: list() };
    } else if (how?.t === 'word' && how.v === 'IN') {
      out = { kind: 'list', values: list() };
    } else if (how?.t === 'word' && how.v === 'WITH') {
      punct('(');
      word('MODULUS');
      const modulus = number();
      punct(',');
      word('REMAINDER');
      const remainder = number();
      punct(')');
      out = { kind: 'hash', modulus, remainder };
    } else {
      throw bad();
    }
  }
  if (i !== ts.length) throw bad();
  return out;
}

const valueSql = (v: BoundValue): string => (v === null ? 'NULL' : 'special' in v ? v.special : escapeLiteral(v.literal));

/** The bound written back for CREATE TABLE … PARTITION OF / ATTACH PARTITION, every value a quoted literal. */
export function forValues(b: Bound): string {
  switch (b.kind) {
    case 'default':
      return 'DEFAULT';
    case 'range':
      return `FOR VALUES FROM (${b.from.map(valueSql).join(', ')}) TO (${b.to.map(valueSql).join(', ')})`;
    case 'list':
      return `FOR VALUES IN (${b.values.map(valueSql).join(', ')})`;
    case 'hash':
      return `FOR VALUES WITH (MODULUS ${b.modulus}, REMAINDER ${b.remainder})`;
  }
}

/** `PARTITION BY …` for a partition that is partitioned too; null when its key has an expression. */
export function partitionBy(key: { strategy: 'r' | 'l' | 'h'; keys: string[] | null }): string | null {
  if (!key.keys?.length) return null;
  const how = { r: 'RANGE', l: 'LIST', h: 'HASH' }[key.strategy];
  return `PARTITION BY ${how} (${key.keys.map(ident).join(', ')})`;
}

/**
 * The condition a row of the root meets when it lies in the partition: every
 * level's bound over its key columns, values as parameters appended to
 * `params`. Null when a level cannot be said over columns: a hash or DEFAULT
 * partition, or a key with an expression.
 */
export function boundCondition(chain: readonly BoundLevel[], params: unknown[]): string | null {
  const parts: string[] = [];
  const param = (v: BoundValue) => {
    params.push(v === null || 'special' in v ? null : v.literal);
    return `$${params.length}`;
  };
  const tuple = (items: string[]) => (items.length === 1 ? items[0] : `(${items.join(', ')})`);
  for (const level of chain) {
    if (!level.keys?.length) return null;
    const cols = level.keys.map(ident);
    const b = parseBound(level.bound);
    if (b.kind === 'hash' || b.kind === 'default') return null;
    if (b.kind === 'list') {
      if (cols.length !== 1) return null;
      const vals = b.values.filter((v): v is { literal: string } => v !== null && 'literal' in v);
      const alts: string[] = [];
      if (vals.length) alts.push(`${cols[0]} IN (${vals.map(param).join(', ')})`);
      if (b.values.some((v) => v === null)) alts.push(`${cols[0]} IS NULL`);
      parts.push(alts.length ? `(${alts.join(' OR ')})` : 'false');
      continue;
    }
    if (b.from.length !== cols.length || b.to.length !== cols.length) return null;
    for (const c of cols) parts.push(`${c} IS NOT NULL`);
    // A range bound compares rows as tuples; MINVALUE / MAXVALUE at a place end the comparison there.
    const side = (vals: BoundValue[], lower: boolean) => {
      const at = vals.findIndex((v) => v === null || 'special' in v);
      const n = at < 0 ? vals.length : at;
      const prefix = tuple(cols.slice(0, n));
      const values = () => tuple(vals.slice(0, n).map(param));
      if (at < 0) return `${prefix} ${lower ? '>=' : '<'} ${values()}`;
      const v = vals[at];
      const min = v !== null && 'special' in v && v.special === 'MINVALUE';
      if (n === 0) return lower === min ? 'true' : 'false';
      return `${prefix} ${lower ? (min ? '>=' : '>') : min ? '<' : '<='} ${values()}`;
    };
    parts.push(side(b.from, true), side(b.to, false));
  }
  return parts.length ? parts.join(' AND ') : 'true';
}
