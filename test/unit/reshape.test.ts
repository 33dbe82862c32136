import { describe, expect, it } from 'vitest';
import type { ColumnRow } from '../../src/apply/target';
import { describeReshapeStep, planReshape, reshapeSql, shadowDdl } from '../../src/snapshot/reshape';
import type { TableRef } from '../../src/tables';

/** Resync's reshaping of a replica table to the source's columns (src/snapshot/reshape.ts). */
const col = (name: string, type: string, o: { required?: boolean; generated?: boolean } = {}): ColumnRow => ({
  schema_name: 'public',
  table_name: 't',
  column_name: name,
  type_name: type,
  required: o.required ? 't' : 'f',
  generated: o.generated ? 't' : 'f',
});
const table = (columns: [string, string][]): TableRef => ({ schema: 'public', table: 't', columns: columns.map(([name, type]) => ({ name, type })) });

describe('planReshape', () => {
  const cases: { name: string; sent: [string, string][]; source?: string[]; mine: ColumnRow[]; steps: string[]; problems?: RegExp[] }[] = [
    { name: 'same shape: nothing', sent: [['id', 'integer'], ['v', 'text']], mine: [col('id', 'integer'), col('v', 'text')], steps: [] },
    {
      name: 'drop, rename (drop + add), add, retype; drops first, additions last',
      sent: [['id', 'integer'], ['n', 'bigint'], ['s', 'text'], ['new_name', 'text'], ['added', 'text']],
      mine: [col('id', 'integer'), col('n', 'integer'), col('s', 'character varying(10)'), col('gone', 'text', { required: true }), col('old_name', 'text')],
      steps: ['column gone dropped', 'column old_name dropped', 'column n type integer → bigint', 'column s type character varying(10) → text', 'column new_name added', 'column added added'],
    },
    { name: "the replica's generated column stays", sent: [['id', 'integer']], mine: [col('id', 'integer'), col('g', 'integer', { generated: true })], steps: [] },
    {
      name: 'a column the source has but does not send (column list) stays',
      sent: [['id', 'integer']],
      source: ['id', 'secret'],
      mine: [col('id', 'integer'), col('secret', 'text')],
      steps: [],
    },
    {
      name: 'an unsent NOT NULL column without default nothing fills is refused',
      sent: [['id', 'integer']],
      source: ['id', 'secret'],
      mine: [col('id', 'integer'), col('secret', 'text', { required: true })],
      steps: [],
      problems: [/column secret is NOT NULL without a default on the replica, and the source does not send it/],
    },
    {
      name: 'a sent column generated on the replica is refused',
      sent: [['id', 'integer'], ['g', 'integer']],
      mine: [col('id', 'integer'), col('g', 'integer', { generated: true })],
      steps: [],
      problems: [/column g is generated on the replica but sent by the source/],
    },
    {
      name: 'a type that is not a type name is never put into a statement',
      sent: [['id', 'integer'], ['x', 'integer; DROP TABLE t']],
      mine: [col('id', 'integer'), col('x', 'integer')],
      steps: [],
      problems: [/column x has a type pgferry does not recognise as a type name/],
    },
  ];
  it.each(cases)('$name', ({ sent, source, mine, steps, problems }) => {
    const t = table(sent);
    const plan = planReshape(t, new Set(source ?? sent.map(([n]) => n)), mine);
    expect(plan.steps.map(describeReshapeStep)).toEqual(steps);
    expect(plan.problems).toHaveLength(problems?.length ?? 0);
    for (const [i, p] of (problems ?? []).entries()) expect(plan.problems[i]).toMatch(p);
  });
});

describe('reshapeSql and shadowDdl', () => {
  const t: TableRef = { schema: 'my schema', table: 'T"x', columns: [{ name: 'a b', type: 'character varying(5)' }, { name: 'n', type: 'bigint' }] };
  it('quotes names; a type change meets no rows (the table was emptied), so NULL stands for every value', () => {
    expect(reshapeSql(t, { kind: 'drop-column', name: 'Old' })).toBe('ALTER TABLE "my schema"."T""x" DROP COLUMN "Old"');
    expect(reshapeSql(t, { kind: 'add-column', name: 'a b', type: 'text' })).toBe('ALTER TABLE "my schema"."T""x" ADD COLUMN "a b" text');
    expect(reshapeSql(t, { kind: 'alter-type', name: 'n', from: 'integer', to: 'bigint' })).toBe('ALTER TABLE "my schema"."T""x" ALTER COLUMN "n" TYPE bigint USING NULL::bigint');
  });
  it("the shadow has the source's columns", () => {
    expect(shadowDdl(t, { schema: 'pgferry_shadow', table: 's_1' })).toBe('CREATE UNLOGGED TABLE "pgferry_shadow"."s_1" ("a b" character varying(5), "n" bigint)');
    expect(shadowDdl({ schema: 'public', table: 'empty', columns: [] }, { schema: 'pgferry_shadow', table: 's_2' })).toBe('CREATE UNLOGGED TABLE "pgferry_shadow"."s_2" ()');
    expect(() => shadowDdl({ schema: 'public', table: 'x', columns: [{ name: 'a', type: 'int) ; DROP TABLE y; --' }] }, { schema: 'pgferry_shadow', table: 's_3' })).toThrow(/not recognise as a type name/);
  });
});
