import { describe, expect, it } from 'vitest';
import { buildDelete, buildInsert, buildInsertRows, buildTruncate, buildUpdate, describeKey, insertRowsLimit, INSERT_ROWS } from '../../src/apply/sql-builder';
import type { RelationInfo } from '../../src/change';

const orders: RelationInfo = {
  schema: 'public',
  table: 'orders',
  identity: 'default',
  columns: [
    { name: 'id', type: 'bigint', key: true },
    { name: 'amount', type: 'numeric(12,2)', key: false },
    { name: 'note', type: 'text', key: false },
  ],
};
const hostile: RelationInfo = {
  schema: 'My "Schema"',
  table: 'x"; drop table y; --',
  identity: 'full',
  columns: [
    { name: 'select', type: 'text', key: true },
    { name: 'a b', type: 'int', key: true },
  ],
};

describe('apply SQL', () => {
  it('inserts with parameters and OVERRIDING SYSTEM VALUE', () => {
    const s = buildInsert(orders, { id: '1', amount: '9.99', note: null });
    expect(s.text).toBe('INSERT INTO "public"."orders" ("id", "amount", "note") OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3)');
    expect(s.values).toEqual(['1', '9.99', null]);
    expect(s.name).toMatch(/^pf_[0-9a-f]{20}$/);
  });

  it('inserts a run of rows in one statement, every value still a parameter, in order', () => {
    const s = buildInsertRows(orders, [
      { id: '1', amount: '1.00', note: null },
      { id: '2', amount: '2.00', note: 'x"); drop table t; --' },
    ]);
    expect(s.text).toBe('INSERT INTO "public"."orders" ("id", "amount", "note") OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3), ($4, $5, $6)');
    expect(s.values).toEqual(['1', '1.00', null, '2', '2.00', 'x"); drop table t; --']);
    expect(s.name).toBe(''); // an odd size: not kept prepared
    const full = buildInsertRows(orders, Array.from({ length: insertRowsLimit(3) }, (_, i) => ({ id: String(i), amount: '0', note: null })));
    expect(full.name).toMatch(/^pf_/);
    expect(insertRowsLimit(3)).toBe(INSERT_ROWS);
    expect(insertRowsLimit(1000) * 1000).toBeLessThanOrEqual(65535); // PostgreSQL's bind-parameter limit
  });

  it('updates by the old key, so a changed primary key moves the row', () => {
    const s = buildUpdate(orders, { id: '1' }, { id: '2', amount: '1.00', note: 'n' })!;
    expect(s.text).toBe('UPDATE "public"."orders" SET "id" = $1, "amount" = $2, "note" = $3 WHERE "id" = $4');
    expect(s.values).toEqual(['2', '1.00', 'n', '1']);
  });

  it('sets only the columns sent (unchanged TOAST columns are left alone)', () => {
    expect(buildUpdate(orders, { id: '1' }, { id: '1', amount: '2.00' })!.text).toBe('UPDATE "public"."orders" SET "amount" = $1 WHERE "id" = $2');
    expect(buildUpdate(orders, { id: '1' }, {})).toBeNull();
    expect(buildUpdate(orders, { id: '1' }, { id: '1' })).toBeNull();
  });

  it('deletes by key', () => {
    const s = buildDelete(orders, { id: '5' });
    expect(s.text).toBe('DELETE FROM "public"."orders" WHERE "id" = $1');
    expect(s.values).toEqual(['5']);
  });

  it('escapes every identifier and matches one whole row (NULLs included) for REPLICA IDENTITY FULL', () => {
    const s = buildDelete(hostile, { select: null, 'a b': '3' });
    expect(s.text).toBe(
      'DELETE FROM "My ""Schema"""."x""; drop table y; --" WHERE ctid = (SELECT ctid FROM "My ""Schema"""."x""; drop table y; --" WHERE "select" IS NOT DISTINCT FROM $1 AND "a b" IS NOT DISTINCT FROM $2 LIMIT 1)',
    );
    expect(s.values).toEqual([null, '3']);
  });

  it('compares types without an equality operator (json, geometry) by their text form in whole-row matches', () => {
    const rel: RelationInfo = {
      schema: 's',
      table: 't',
      identity: 'full',
      columns: [
        { name: 'j', type: 'json', key: true },
        { name: 'b', type: 'box[]', key: true },
        { name: 'n', type: 'numeric(12,2)', key: true },
      ],
    };
    expect(buildDelete(rel, { j: '{}', b: null, n: '1.00' }).text).toBe(
      'DELETE FROM "s"."t" WHERE ctid = (SELECT ctid FROM "s"."t" WHERE "j"::text IS NOT DISTINCT FROM $1::text AND "b"::text IS NOT DISTINCT FROM $2::text AND "n" IS NOT DISTINCT FROM $3 LIMIT 1)',
    );
  });

  it('truncates several tables in one statement with its options', () => {
    expect(buildTruncate([orders, hostile], true, true).text).toBe('TRUNCATE "public"."orders", "My ""Schema"""."x""; drop table y; --" RESTART IDENTITY CASCADE');
    expect(buildTruncate([orders], false, false).text).toBe('TRUNCATE "public"."orders"');
  });

  it('names the key of a row in errors', () => {
    expect(describeKey(orders, { id: '7', amount: '1' })).toBe('{"id":"7"}');
  });
});
