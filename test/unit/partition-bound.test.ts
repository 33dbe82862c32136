import { describe, expect, it } from 'vitest';
import { boundCondition, forValues, parseBound, partitionBy } from '../../src/partition-bound';

describe('partition bounds as the source prints them', () => {
  it.each([
    [`FOR VALUES FROM ('2026-01-01 00:00:00') TO ('2026-02-01 00:00:00')`, { kind: 'range', from: [{ literal: '2026-01-01 00:00:00' }], to: [{ literal: '2026-02-01 00:00:00' }] }],
    [`FOR VALUES FROM ('-5', MINVALUE) TO (10, 20)`, { kind: 'range', from: [{ literal: '-5' }, { special: 'MINVALUE' }], to: [{ literal: '10' }, { literal: '20' }] }],
    [`FOR VALUES IN ('a', 'it''s', NULL)`, { kind: 'list', values: [{ literal: 'a' }, { literal: "it's" }, null] }],
    [`FOR VALUES IN (true)`, { kind: 'list', values: [{ literal: 'true' }] }],
    [`FOR VALUES WITH (modulus 4, remainder 3)`, { kind: 'hash', modulus: 4, remainder: 3 }],
    ['DEFAULT', { kind: 'default' }],
  ])('%s', (text, want) => {
    expect(parseBound(text)).toEqual(want);
  });

  it.each([`FOR VALUES FROM ('a') TO ('b'); DROP TABLE x`, `FOR VALUES IN (now())`, `FOR VALUES FROM ('a') TO ('b`, `DEFAULT DEFAULT`, `FOR VALUES IN ('a') -- x`])(
    'refuses what is not a bound: %s',
    (text) => {
      expect(() => parseBound(text)).toThrow(/does not read as one/);
    },
  );

  it('writes a bound back with every value quoted', () => {
    expect(forValues(parseBound(`FOR VALUES FROM ('2026-01-01') TO (MAXVALUE)`))).toBe(`FOR VALUES FROM ('2026-01-01') TO (MAXVALUE)`);
    expect(forValues(parseBound(`FOR VALUES IN ('it''s', NULL, 5)`))).toBe(`FOR VALUES IN ('it''s', NULL, '5')`);
    expect(forValues(parseBound(`FOR VALUES WITH (modulus 2, remainder 1)`))).toBe('FOR VALUES WITH (MODULUS 2, REMAINDER 1)');
    expect(partitionBy({ strategy: 'l', keys: ['Kind'] })).toBe('PARTITION BY LIST ("Kind")');
    expect(partitionBy({ strategy: 'r', keys: null })).toBeNull();
  });

  it('says which rows of the root lie in a partition, values as parameters', () => {
    const params: unknown[] = [];
    const cond = boundCondition(
      [
        { strategy: 'l', keys: ['region'], bound: `FOR VALUES IN ('eu', NULL)` },
        { strategy: 'r', keys: ['ts'], bound: `FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')` },
      ],
      params,
    );
    expect(cond).toBe('("region" IN ($1) OR "region" IS NULL) AND "ts" IS NOT NULL AND "ts" >= $2 AND "ts" < $3');
    expect(params).toEqual(['eu', '2026-01-01', '2026-02-01']);
  });

  it('ends a multi-column range comparison at MINVALUE / MAXVALUE', () => {
    const params: unknown[] = [];
    expect(boundCondition([{ strategy: 'r', keys: ['a', 'b'], bound: `FOR VALUES FROM (1, MINVALUE) TO (MAXVALUE, MAXVALUE)` }], params)).toBe(
      '"a" IS NOT NULL AND "b" IS NOT NULL AND "a" >= $1 AND true',
    );
    const p2: unknown[] = [];
    expect(boundCondition([{ strategy: 'r', keys: ['a', 'b'], bound: `FOR VALUES FROM (1, 2) TO (3, MAXVALUE)` }], p2)).toBe(
      '"a" IS NOT NULL AND "b" IS NOT NULL AND ("a", "b") >= ($1, $2) AND "a" <= $3',
    );
    expect(p2).toEqual(['1', '2', '3']);
  });

  it('has no condition for hash or DEFAULT partitions or expression keys', () => {
    expect(boundCondition([{ strategy: 'h', keys: ['id'], bound: 'FOR VALUES WITH (modulus 2, remainder 0)' }], [])).toBeNull();
    expect(boundCondition([{ strategy: 'l', keys: ['k'], bound: 'DEFAULT' }], [])).toBeNull();
    expect(boundCondition([{ strategy: 'r', keys: null, bound: `FOR VALUES FROM (1) TO (2)` }], [])).toBeNull();
  });
});
