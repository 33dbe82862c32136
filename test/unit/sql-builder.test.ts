import { describe, expect, it } from 'vitest';
import { buildCopyInsert, copyText, buildDelete, buildDeleteRows, buildInsert, buildInsertRows, buildUpdateRows, buildTruncate, buildUpdate, describeKey, insertRowsLimit, INSERT_ROWS, keyColumns } from '../../src/apply/sql-builder';
import { relKey, type RelationInfo, type TxnMessage } from '../../src/change';
import { decodeMessage, encodeMessage } from '../../src/changelog/wire';
import { runLength } from '../../src/apply/runs';
import { stagedRows, stagedSql } from '../../src/apply/staging';

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

const nocols: RelationInfo = { schema: 'public', table: 'nocols', identity: 'full', columns: [] };

describe('apply SQL', () => {
  it('a table with no columns: inserts of empty rows, COPY without a column list, a delete of any one row', () => {
    expect(buildInsert(nocols, {}).text).toBe('INSERT INTO "public"."nocols" DEFAULT VALUES');
    const many = buildInsertRows(nocols, [{}, {}, {}]);
    expect(many.text).toBe('INSERT INTO "public"."nocols" SELECT FROM pg_catalog.generate_series(1, 3)');
    expect(many.values).toEqual([]);
    expect(buildCopyInsert(nocols, [])).toBe('COPY "public"."nocols" FROM STDIN');
    expect(copyText([], [{}, {}])).toBe('\n\n');
    const del = buildDelete(nocols, {});
    expect(del.text).toBe(
      'WITH pgferry_row AS (SELECT tableoid AS t, ctid AS c FROM "public"."nocols" WHERE true LIMIT 1) DELETE FROM "public"."nocols" WHERE ctid = (SELECT c FROM pgferry_row) AND tableoid = (SELECT t FROM pgferry_row)',
    );
    expect(del.values).toEqual([]);
    expect(buildUpdate(nocols, {}, {})).toBeNull();
    // A table with columns still needs its identity in the old row.
    expect(() => buildDelete(orders, {})).toThrow(/no replica identity columns/);
  });

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

  it('writes a run of inserts as COPY text: NULL as \\N, backslash, tab, newline and CR escaped, nothing else touched', () => {
    expect(buildCopyInsert({ ...orders, table: 'Or"ders' }, ['id', 'note'])).toBe('COPY "public"."Or""ders" ("id", "note") FROM STDIN');
    const text = copyText(['id', 'note'], [
      { id: '1', note: null },
      { id: '2', note: 'a\tb\nc\rd\\e' },
      { id: '3', note: '\\N' },
      { id: '4', note: '{"k": "v é"}' },
      { id: '5', note: '' },
    ]);
    expect(text).toBe('1\t\\N\n2\ta\\tb\\nc\\rd\\\\e\n3\t\\\\N\n4\t{"k": "v é"}\n5\t\n');
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
      'WITH pgferry_row AS (SELECT tableoid AS t, ctid AS c FROM "My ""Schema"""."x""; drop table y; --" WHERE "select" IS NOT DISTINCT FROM $1 AND "a b" IS NOT DISTINCT FROM $2 LIMIT 1) DELETE FROM "My ""Schema"""."x""; drop table y; --" WHERE ctid = (SELECT c FROM pgferry_row) AND tableoid = (SELECT t FROM pgferry_row)',
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
      'WITH pgferry_row AS (SELECT tableoid AS t, ctid AS c FROM "s"."t" WHERE "j"::text IS NOT DISTINCT FROM $1::text AND "b"::text IS NOT DISTINCT FROM $2::text AND "n" IS NOT DISTINCT FROM $3 LIMIT 1) DELETE FROM "s"."t" WHERE ctid = (SELECT c FROM pgferry_row) AND tableoid = (SELECT t FROM pgferry_row)',
    );
  });

  it('truncates several tables in one statement, never with CASCADE (defect D)', () => {
    expect(buildTruncate([orders, hostile], true).text).toBe('TRUNCATE "public"."orders", "My ""Schema"""."x""; drop table y; --" RESTART IDENTITY');
    expect(buildTruncate([orders], false).text).toBe('TRUNCATE "public"."orders"');
  });

  it('names the key of a row in errors', () => {
    expect(describeKey(orders, { id: '7', amount: '1' })).toBe('{"id":"7"}');
  });
});

describe('set-based apply', () => {
  const types = new Map([['id', 'integer'], ['amount', 'numeric'], ['note', 'text']]);
  it('updates several rows by key in one statement, values cast to the replica base types', () => {
    const s = buildUpdateRows(orders, ['id'], ['amount', 'note'], [
      { old: { id: '1' }, new: { id: '1', amount: '1.50', note: null } },
      { old: { id: '2' }, new: { id: '2', amount: '2.50', note: 'x' } },
    ], types);
    expect(s.text).toBe(
      'UPDATE "public"."orders" AS t SET "amount" = v.c0, "note" = v.c1 FROM (VALUES ($1::integer, $2::numeric, $3::text), ($4::integer, $5::numeric, $6::text)) AS v(k0, c0, c1) WHERE t."id" = v.k0',
    );
    expect(s.values).toEqual(['1', '1.50', null, '2', '2.50', 'x']);
  });

  it('deletes several rows by key in one statement', () => {
    const s = buildDeleteRows(orders, ['id'], [{ id: '1' }, { id: '7' }], types);
    expect(s.text).toBe('DELETE FROM "public"."orders" AS t USING (VALUES ($1::integer), ($2::integer)) AS v(k0) WHERE t."id" = v.k0');
    expect(s.values).toEqual(['1', '7']);
  });

  it('groups only what one statement can do exactly as row by row', () => {
    const rel = JSON.stringify(['public', 'orders']);
    const m = { relations: { [rel]: orders } } as unknown as TxnMessage;
    const up = (id: string, amount: string, newId = id) => ({ op: 'update' as const, rel, old: { id }, new: { id: newId, amount, note: null } });
    expect(runLength(m, [up('1', '1'), up('2', '2'), up('3', '3')], 0)).toBe(3);
    expect(runLength(m, [up('1', '1'), up('2', '2'), up('1', '9')], 0)).toBe(2); // the same row twice: split
    expect(runLength(m, [up('1', '1'), up('2', '2', '5')], 0)).toBe(1); // a key change: alone
    expect(runLength(m, [up('1', '1'), { op: 'delete', rel, old: { id: '3' } }], 0)).toBe(1);
    const del = (id: string) => ({ op: 'delete' as const, rel, old: { id } });
    expect(runLength(m, [del('1'), del('2'), del('3')], 0)).toBe(3);
    const full = { [rel]: { ...orders, identity: 'full' } };
    expect(runLength({ relations: full } as unknown as TxnMessage, [del('1'), del('2')], 0)).toBe(1);
  });
});

describe('staged set statements (staging.ts)', () => {
  const types = new Map([['select', 'text'], ['a b', 'integer'], ['v', 'pg_catalog.bpchar']]);
  const rel: RelationInfo = { ...hostile, identity: 'default', columns: [...hostile.columns, { name: 'v', type: 'character(2)', key: false }] };
  it('stages keys and values in the replica types, joins on the key, and restores random_page_cost after the set statement', () => {
    const rows = [{ old: { select: 'a\tb', 'a b': '1' }, new: { select: 'a\tb', 'a b': '1', v: null } }];
    const up = stagedSql({ op: 'update', rel, keys: ['select', 'a b'], cols: ['v'], rows }, types)!;
    const stage = up.copy.slice('COPY '.length, -' FROM STDIN'.length);
    expect(stage).toMatch(/^pg_temp\."pgferry_stage_[0-9a-f]{20}"$/);
    expect(up.create).toBe(`CREATE TEMP TABLE IF NOT EXISTS ${stage.slice('pg_temp.'.length)} (k0 text, k1 integer, c0 pg_catalog.bpchar) ON COMMIT DROP`);
    expect(up.apply).toContain(`UPDATE "My ""Schema"""."x""; drop table y; --" AS t SET "v" = s.c0 FROM ${stage} AS s WHERE t."select" = s.k0 AND t."a b" = s.k1; TRUNCATE ${stage};`);
    expect(up.apply.indexOf("set_config('random_page_cost', LEAST(")).toBeLessThan(up.apply.indexOf('UPDATE'));
    expect(up.apply.lastIndexOf("set_config('random_page_cost', pg_catalog.current_setting('pgferry.random_page_cost')")).toBeGreaterThan(up.apply.indexOf('TRUNCATE'));
    expect(stagedRows({ op: 'update', rel, keys: ['select', 'a b'], cols: ['v'], rows })).toBe('a\\tb\t1\t\\N\n');
    const del = stagedSql({ op: 'delete', rel, keys: ['a b'], cols: [], rows }, types)!;
    expect(del.apply).toContain(`DELETE FROM "My ""Schema"""."x""; drop table y; --" AS t USING pg_temp."pgferry_stage_`);
    expect(del.create).not.toBe(up.create); // another shape of types, another staging table
  });

  it('sets whose staging columns have the same types in other roles (keys, values) get staging tables of their own', () => {
    const a = stagedSql({ op: 'delete', rel, keys: ['a b', 'select'], cols: [], rows: [] }, types)!; // k0 integer, k1 text
    const b = stagedSql({ op: 'update', rel, keys: ['a b'], cols: ['select'], rows: [] }, types)!; // k0 integer, c0 text
    expect(a.copy).not.toBe(b.copy);
  });

  it('stages nothing when a column type of the replica is unknown (the VALUES form then names the problem)', () => {
    expect(stagedSql({ op: 'update', rel, keys: ['select'], cols: ['missing'], rows: [] }, types)).toBeNull();
  });
});

describe('key columns per relation description', () => {
  const described = (): RelationInfo => ({ schema: 's', table: 't', identity: 'default', columns: [{ name: 'a', type: 'int', key: false }, { name: 'id', type: 'int', key: true }] });
  it('keeps them for a frozen description (as readers share them), derives them again for one that may change', () => {
    const frozen = decodeMessage(encodeMessage({ v: 2, source: 's', xid: 1, lsn: '0/1', endLsn: '0/1', commitTime: 'x', seq: 0, last: true, relations: { [relKey('s', 't')]: described() }, changes: [] })).relations[relKey('s', 't')];
    expect(Object.isFrozen(frozen)).toBe(true);
    expect(keyColumns(frozen)).toEqual(['id']);
    expect(keyColumns(frozen)).toBe(keyColumns(frozen)); // the same list: derived once
    const open = described();
    expect(keyColumns(open)).toEqual(['id']);
    open.columns[0].key = true; // a description built in memory may still change: its keys follow
    expect(keyColumns(open)).toEqual(['a', 'id']);
  });
});
