/**
 * Schema-change planning (src/schema-change.ts) against an oracle: a random
 * table with rows, a random run of DDL on the source (columns added with or
 * without a stored default, dropped, renamed — also swapped and chained —,
 * retyped, made NOT NULL or nullable; the table renamed or moved), and the
 * plan's steps carried out on a model of the replica that knows columns by
 * name only, as a replica does. The replica must end with exactly the
 * source's columns (names, types, nullability) and every row's values where
 * the source has them: a renamed column keeps its data.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { SchemaChange, ShapeColumn, TableShape } from '../../src/change';
import { describeSchemaChange, isTypeName, planSchemaChange, safeCast, type SchemaStep } from '../../src/schema-change';
import { schemaStatements } from '../../src/apply/schema-apply';

type Value = string | null;

interface SourceTable {
  shape: TableShape;
  /** Rows by attnum. */
  rows: Map<number, Value>[];
  nextNum: number;
}

const NAMES = ['a', 'b', 'c', 'd', 'Odd "Name"', 'x y'];
const TYPES = ['integer', 'bigint', 'text', 'character varying(10)', 'numeric(12,2)'];

type Ddl =
  | { kind: 'add'; name: number; type: number; notNull: boolean; fill: Value }
  | { kind: 'drop'; col: number }
  | { kind: 'rename'; col: number; name: number }
  | { kind: 'swap'; a: number; b: number }
  | { kind: 'type'; col: number; type: number }
  | { kind: 'null'; col: number; notNull: boolean }
  | { kind: 'table'; name: string; schema: string };

const ddl: fc.Arbitrary<Ddl> = fc.oneof(
  fc.record({ kind: fc.constant('add' as const), name: fc.nat(NAMES.length - 1), type: fc.nat(TYPES.length - 1), notNull: fc.boolean(), fill: fc.option(fc.string({ maxLength: 6 }), { nil: null }) }),
  fc.record({ kind: fc.constant('drop' as const), col: fc.nat(9) }),
  fc.record({ kind: fc.constant('rename' as const), col: fc.nat(9), name: fc.nat(NAMES.length - 1) }),
  fc.record({ kind: fc.constant('swap' as const), a: fc.nat(9), b: fc.nat(9) }),
  fc.record({ kind: fc.constant('type' as const), col: fc.nat(9), type: fc.nat(TYPES.length - 1) }),
  fc.record({ kind: fc.constant('null' as const), col: fc.nat(9), notNull: fc.boolean() }),
  fc.record({ kind: fc.constant('table' as const), name: fc.constantFrom('items', 'things', 'It"s'), schema: fc.constantFrom('public', 'archive') }),
);

const clone = (t: SourceTable): SourceTable => ({
  shape: { ...t.shape, columns: t.shape.columns.map((c) => ({ ...c })) },
  rows: t.rows.map((r) => new Map(r)),
  nextNum: t.nextNum,
});

/** The source runs one DDL command (when it is valid there); fills: the stored default of an added column. */
function runOnSource(t: SourceTable, d: Ddl, fills: Record<string, Value>): void {
  const cols = t.shape.columns;
  const nonKey = cols.filter((c) => !c.key);
  const pick = (i: number) => (nonKey.length ? nonKey[i % nonKey.length] : undefined);
  const free = (name: string) => !cols.some((c) => c.name === name);
  switch (d.kind) {
    case 'add': {
      const name = NAMES[d.name];
      if (!free(name)) return;
      const num = t.nextNum++;
      cols.push({ num, name, type: TYPES[d.type], notNull: d.notNull && d.fill !== null, key: false, generated: false });
      for (const r of t.rows) r.set(num, d.fill);
      if (d.fill !== null) fills[name] = d.fill;
      return;
    }
    case 'drop': {
      const c = pick(d.col);
      if (!c) return;
      cols.splice(cols.indexOf(c), 1);
      for (const r of t.rows) r.delete(c.num);
      delete fills[c.name];
      return;
    }
    case 'rename': {
      const c = pick(d.col);
      const name = NAMES[d.name];
      if (!c || !free(name)) return;
      if (c.name in fills) {
        fills[name] = fills[c.name];
        delete fills[c.name];
      }
      c.name = name;
      return;
    }
    case 'swap': {
      const a = pick(d.a);
      const b = pick(d.b);
      if (!a || !b || a === b) return;
      [a.name, b.name] = [b.name, a.name];
      const fa = fills[a.name];
      const fb = fills[b.name];
      delete fills[a.name];
      delete fills[b.name];
      if (fb !== undefined) fills[a.name] = fb;
      if (fa !== undefined) fills[b.name] = fa;
      return;
    }
    case 'type': {
      const c = pick(d.col);
      if (c) c.type = TYPES[d.type];
      return;
    }
    case 'null': {
      const c = pick(d.col);
      if (c && (!d.notNull || t.rows.every((r) => r.get(c.num) !== null))) c.notNull = d.notNull;
      return;
    }
    case 'table':
      t.shape.table = d.name;
      t.shape.schema = d.schema;
  }
}

interface ReplicaTable {
  schema: string;
  table: string;
  /** name → [type, notNull] */
  columns: Map<string, [string, boolean]>;
  rows: Map<string, Value>[];
}

/** The plan's steps on a replica that knows columns by name only; a step a real replica would refuse throws. */
function runOnReplica(r: ReplicaTable, steps: SchemaStep[]): void {
  const has = (n: string) => r.columns.has(n);
  for (const s of steps) {
    switch (s.kind) {
      case 'create-table':
        throw new Error('no create in this test');
      case 'drop-column':
        if (!has(s.name)) throw new Error(`drop of missing column ${s.name}`);
        r.columns.delete(s.name);
        for (const row of r.rows) row.delete(s.name);
        break;
      case 'rename-column': {
        if (!has(s.from)) throw new Error(`rename of missing column ${s.from}`);
        if (has(s.to)) throw new Error(`rename to existing column ${s.to}`);
        r.columns.set(s.to, r.columns.get(s.from)!);
        r.columns.delete(s.from);
        for (const row of r.rows) {
          row.set(s.to, row.get(s.from)!);
          row.delete(s.from);
        }
        break;
      }
      case 'alter-type':
        if (!has(s.name)) throw new Error(`type change of missing column ${s.name}`);
        r.columns.get(s.name)![0] = s.to;
        break;
      case 'drop-not-null':
      case 'set-not-null': {
        const c = r.columns.get(s.name);
        if (!c) throw new Error(`null change of missing column ${s.name}`);
        if (s.kind === 'set-not-null' && r.rows.some((row) => row.get(s.name) === null)) throw new Error(`SET NOT NULL on ${s.name} with nulls`);
        c[1] = s.kind === 'set-not-null';
        break;
      }
      case 'add-column':
        if (has(s.column.name)) throw new Error(`add of existing column ${s.column.name}`);
        if (s.column.notNull && s.fill === null && r.rows.length) throw new Error(`ADD ${s.column.name} NOT NULL without a value`);
        r.columns.set(s.column.name, [s.column.type, s.column.notNull]);
        for (const row of r.rows) row.set(s.column.name, s.fill);
        break;
      case 'set-schema':
        r.schema = s.schema;
        break;
      case 'rename-table':
        r.table = s.to;
        break;
    }
  }
}

function startTable(nCols: number, nRows: number): SourceTable {
  const columns: ShapeColumn[] = [{ num: 1, name: 'id', type: 'integer', notNull: true, key: true, generated: false }];
  for (let i = 0; i < nCols; i++) columns.push({ num: i + 2, name: NAMES[i], type: TYPES[i % TYPES.length], notNull: false, key: false, generated: false });
  const rows = Array.from({ length: nRows }, (_, i) => new Map<number, Value>(columns.map((c) => [c.num, c.key ? String(i) : i % 3 === 0 ? null : `${c.name}${i}`])));
  return { shape: { schema: 'public', table: 'items', columns }, rows, nextNum: columns.length + 1 };
}

describe('schema change plans', () => {
  it('take a replica from the shape before to the shape after, every value kept (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 4 }), fc.integer({ min: 0, max: 3 }), fc.array(ddl, { minLength: 1, maxLength: 5 }), (nCols, nRows, commands) => {
        const before = startTable(nCols, nRows);
        const after = clone(before);
        const fills: Record<string, Value> = {};
        for (const d of commands) runOnSource(after, d, fills);
        const change: SchemaChange = { op: 'schema', oid: 42, command: 'ALTER TABLE', before: before.shape, after: after.shape, fills, unfilled: [] };
        const plan = planSchemaChange(change);
        const replica: ReplicaTable = {
          schema: before.shape.schema,
          table: before.shape.table,
          columns: new Map(before.shape.columns.map((c) => [c.name, [c.type, c.notNull]])),
          rows: before.rows.map((row) => new Map(before.shape.columns.map((c) => [c.name, row.get(c.num)!]))),
        };
        runOnReplica(replica, plan.steps);
        expect({ schema: replica.schema, table: replica.table }).toEqual({ schema: after.shape.schema, table: after.shape.table });
        expect(new Map([...replica.columns].sort())).toEqual(new Map(after.shape.columns.map((c) => [c.name, [c.type, c.notNull] as [string, boolean]]).sort()));
        replica.rows.forEach((row, i) => {
          for (const c of after.shape.columns) expect(row.get(c.name)).toBe(after.rows[i].get(c.num));
        });
        expect(schemaStatements(plan)).toHaveLength(plan.steps.length + plan.steps.filter((s) => s.kind === 'add-column' && s.fill !== null).length);
        expect(describeSchemaChange(change)).toMatch(/^ALTER TABLE /);
      }),
      { numRuns: 2000 },
    );
  });

  it('a rename is a rename, never a drop and an add', () => {
    const before = startTable(2, 1).shape;
    const after = { ...before, columns: before.columns.map((c) => (c.name === 'a' ? { ...c, name: 'alpha' } : c)) };
    const plan = planSchemaChange({ op: 'schema', oid: 1, command: 'ALTER TABLE', before, after, fills: {}, unfilled: [] });
    expect(plan.steps).toEqual([{ kind: 'rename-column', from: 'a', to: 'alpha' }]);
    expect(schemaStatements(plan)).toEqual(['ALTER TABLE "public"."items" RENAME COLUMN "a" TO "alpha"']);
  });

  it('quotes names and values, and keeps anything but a type name out of statements', () => {
    const before: TableShape = { schema: 'Odd Schema', table: 'x"; drop table y; --', columns: [{ num: 1, name: 'id', type: 'integer', notNull: true, key: true, generated: false }] };
    const add = (type: string): SchemaChange => ({
      op: 'schema',
      oid: 1,
      command: 'ALTER TABLE',
      before,
      after: { ...before, columns: [...before.columns, { num: 2, name: 'n"o', type, notNull: true, key: false, generated: false }] },
      fills: { 'n"o': "it's \\ here" },
      unfilled: [],
    });
    const plan = planSchemaChange(add('character varying(10)'));
    expect(plan.unsafe).toEqual([]);
    expect(schemaStatements(plan)).toEqual([
      `ALTER TABLE "Odd Schema"."x""; drop table y; --" ADD COLUMN "n""o" character varying(10) DEFAULT  E'it''s \\\\ here'::character varying(10) NOT NULL`,
      `ALTER TABLE "Odd Schema"."x""; drop table y; --" ALTER COLUMN "n""o" DROP DEFAULT`,
    ]);
    expect(planSchemaChange(add('integer; DROP TABLE t')).unsafe[0]).toMatch(/not recognise as a type name/);
    for (const t of ['integer', 'character varying(10)', 'numeric(12,2)', 'timestamp(3) with time zone', 'integer[]', 'public.mood', '"Odd Type"[]', 'bit varying(5)'])
      expect(isTypeName(t)).toBe(true);
    for (const t of ['int; drop', "text' ", 'int -- x', 'f(x)', '', 'int DEFAULT current_user', 'int REFERENCES x']) expect(isTypeName(t)).toBe(false);
  });

  it('applies only casts that keep every value, and says why it will not apply the others', () => {
    expect(safeCast('integer', 'bigint')).toBe(true);
    expect(safeCast('character varying(10)', 'text')).toBe(true);
    expect(safeCast('character varying(10)', 'character varying(20)')).toBe(true);
    expect(safeCast('numeric(12,2)', 'numeric(14,3)')).toBe(true);
    expect(safeCast('bigint', 'integer')).toBe(false);
    expect(safeCast('text', 'integer')).toBe(false);
    expect(safeCast('character varying(20)', 'character varying(10)')).toBe(false);
    expect(safeCast('bigint', 'double precision')).toBe(false);
    const before = startTable(1, 0).shape;
    const after = { ...before, columns: before.columns.map((c) => (c.name === 'a' ? { ...c, type: 'smallint' } : c)) };
    const plan = planSchemaChange({ op: 'schema', oid: 1, command: 'ALTER TABLE', before, after, fills: {}, unfilled: [] });
    expect(plan.unsafe).toEqual(['column a changes type from integer to smallint, a cast that may fail or change values (and the source may have used its own USING expression)']);
  });

  it('will not guess the rows of a volatile default, nor the shape of a table it never saw', () => {
    const before = startTable(0, 1).shape;
    const after = { ...before, columns: [...before.columns, { num: 2, name: 'r', type: 'double precision', notNull: false, key: false, generated: false }] };
    expect(planSchemaChange({ op: 'schema', oid: 1, command: 'ALTER TABLE', before, after, fills: {}, unfilled: ['r'] }).unsafe[0]).toMatch(/volatile default/);
    expect(planSchemaChange({ op: 'schema', oid: 1, command: 'ALTER TABLE', before: null, after, fills: {}, unfilled: [] }).unsafe[0]).toMatch(/no record of its shape/);
    const created = planSchemaChange({ op: 'schema', oid: 1, command: 'CREATE TABLE', before: null, after, fills: {}, unfilled: [] });
    expect(created.unsafe).toEqual([]);
    expect(schemaStatements(created)).toEqual(['CREATE TABLE "public"."items" ("id" integer NOT NULL, "r" double precision, PRIMARY KEY ("id"))']);
  });
});
