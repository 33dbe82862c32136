/**
 * What a schema change means, from the table's shape before and after
 * (change.ts `SchemaChange`): the steps that take a table from one shape to
 * the other, whether each may be applied on a replica without an operator,
 * and the words for people. Pure; apply/schema-apply.ts turns the steps into
 * SQL and runs them per the replica's policy.
 *
 * Columns are matched by attnum, which PostgreSQL keeps across a rename, so
 * a renamed column is renamed (its data stays), never dropped and added.
 * Generated columns are left to each database, as everywhere in pgferry.
 */
import type { SchemaChange, ShapeColumn, TableShape } from './change';
import { nameLabel, relLabel } from './change';

export type SchemaStep =
  | { kind: 'create-table'; shape: TableShape }
  | { kind: 'drop-table' }
  | { kind: 'drop-column'; name: string }
  | { kind: 'rename-column'; from: string; to: string }
  | { kind: 'drop-not-null'; name: string }
  | { kind: 'alter-type'; name: string; from: string; to: string }
  | { kind: 'add-column'; column: ShapeColumn; fill: string | null }
  | { kind: 'set-not-null'; name: string }
  | { kind: 'set-schema'; schema: string }
  | { kind: 'rename-table'; to: string };

export interface SchemaPlan {
  /** The table the steps start from (its name before the change); for a created table, its name. */
  table: { schema: string; table: string };
  /** The table as it is after the change (its name then). */
  target: { schema: string; table: string };
  /** In the order they must run: drops, renames, type and null changes, additions, then the table's own name. */
  steps: SchemaStep[];
  /** Why the change cannot be applied without an operator (empty: it can). */
  unsafe: string[];
}

const CREATE_COMMANDS = new Set(['CREATE TABLE']);

/** The steps of one schema change, and what stands in the way of applying them unattended. */
export function planSchemaChange(ch: SchemaChange): SchemaPlan {
  const { before, after } = ch;
  const unsafe: string[] = [];
  if (!ch.error && before && !after && ch.command === 'DROP TABLE') {
    return { table: before, target: before, steps: [{ kind: 'drop-table' }], unsafe };
  }
  if (ch.error || !after) {
    const at = before ?? after;
    return {
      table: at ?? { schema: '?', table: `oid ${ch.oid}` },
      target: at ?? { schema: '?', table: `oid ${ch.oid}` },
      steps: [],
      unsafe: [`the source could not describe this ${ch.command} (${ch.error ?? 'no shape after it'})`],
    };
  }
  for (const c of after.columns) if (!isTypeName(c.type)) unsafe.push(`column ${nameLabel(c.name)} has a type pgferry does not recognise as a type name (${JSON.stringify(c.type)})`);
  const target = { schema: after.schema, table: after.table };
  if (!before) {
    if (!CREATE_COMMANDS.has(ch.command)) {
      const why = ch.command === 'CREATE TABLE AS' || ch.command === 'SELECT INTO' ? 'its rows were written by the command itself, which the log does not carry' : 'pgferry has no record of its shape before this change';
      unsafe.push(`${ch.command} of ${relLabel(after)}: ${why}`);
    }
    return { table: target, target, steps: [{ kind: 'create-table', shape: { ...after, columns: after.columns.filter((c) => !c.generated) } }], unsafe };
  }
  const steps: SchemaStep[] = [];
  const was = new Map(before.columns.map((c) => [c.num, c]));
  const now = new Map(after.columns.map((c) => [c.num, c]));
  const kept = after.columns.filter((c) => was.has(c.num) && !c.generated && !was.get(c.num)!.generated);
  for (const c of before.columns) if (!now.has(c.num) && !c.generated) steps.push({ kind: 'drop-column', name: c.name });
  steps.push(...renames(kept.filter((c) => was.get(c.num)!.name !== c.name).map((c) => ({ num: c.num, from: was.get(c.num)!.name, to: c.name }))));
  for (const c of kept) {
    const old = was.get(c.num)!;
    if (old.notNull && !c.notNull) steps.push({ kind: 'drop-not-null', name: c.name });
    if (old.type !== c.type) {
      steps.push({ kind: 'alter-type', name: c.name, from: old.type, to: c.type });
      if (!safeCast(old.type, c.type)) unsafe.push(`column ${nameLabel(c.name)} changes type from ${old.type} to ${c.type}, a cast that may fail or change values (and the source may have used its own USING expression)`);
    }
  }
  for (const c of after.columns) {
    if (was.has(c.num) || c.generated) continue;
    steps.push({ kind: 'add-column', column: c, fill: ch.fills[c.name] ?? null });
    if (ch.unfilled.includes(c.name)) {
      unsafe.push(`column ${nameLabel(c.name)} was added with a volatile default or as an identity column, so the values its existing rows received are not in the log`);
    }
  }
  for (const c of kept) if (!was.get(c.num)!.notNull && c.notNull) steps.push({ kind: 'set-not-null', name: c.name });
  if (before.schema !== after.schema) steps.push({ kind: 'set-schema', schema: after.schema });
  if (before.table !== after.table) steps.push({ kind: 'rename-table', to: after.table });
  return { table: { schema: before.schema, table: before.table }, target, steps, unsafe };
}

/**
 * Column renames in an order that never collides: one at a time when no new
 * name is an old name still in use, else each through a temporary name
 * first (a swap of two names, a chain a→b, b→c).
 */
function renames(list: { num: number; from: string; to: string }[]): SchemaStep[] {
  const froms = new Set(list.map((r) => r.from));
  if (!list.some((r) => froms.has(r.to))) return list.map((r) => ({ kind: 'rename-column', from: r.from, to: r.to }));
  const temp = (num: number) => `pgferry_renaming_${num}`;
  return [
    ...list.map((r): SchemaStep => ({ kind: 'rename-column', from: r.from, to: temp(r.num) })),
    ...list.map((r): SchemaStep => ({ kind: 'rename-column', from: temp(r.num), to: r.to })),
  ];
}

/**
 * A type as format_type prints it, and nothing else: names (bare or quoted,
 * dotted), typmods in parentheses, array brackets. Anything else (a
 * semicolon, a comment, an expression) is not a type name and is never put
 * into a statement.
 */
export function isTypeName(t: string): boolean {
  const ident = '(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)';
  const mod = '(?:\\(\\d+(?:,-?\\d+)?\\))?';
  const name = `(?:${ident}(?:\\.${ident})?${mod}|character varying${mod}|bit varying${mod}|double precision|(?:timestamp|time)${mod} with(?:out)? time zone|interval(?: [a-z ]+)?${mod})`;
  return new RegExp(`^${name}(?:\\[\\d*\\])*$`).test(t);
}

const INTEGER_RANK: Record<string, number> = { smallint: 1, integer: 2, bigint: 3 };

/**
 * Casts that keep every value exactly and cannot fail: widening integers,
 * integers to numeric, real to double, longer or unlimited varchar, any
 * varchar to text. Only these are applied unattended (a replica that stops
 * on the others says what to run).
 */
export function safeCast(from: string, to: string): boolean {
  if (from === to) return true;
  const fi = INTEGER_RANK[from];
  if (fi !== undefined) {
    if (INTEGER_RANK[to] !== undefined) return INTEGER_RANK[to] >= fi;
    if (to === 'numeric') return true;
    return to === 'double precision' && fi <= 2;
  }
  if (from === 'real') return to === 'double precision';
  const numeric = (t: string) => /^numeric\((\d+),(\d+)\)$/.exec(t);
  const nf = numeric(from);
  if (nf) {
    if (to === 'numeric') return true;
    const nt = numeric(to);
    return !!nt && Number(nt[2]) >= Number(nf[2]) && Number(nt[1]) - Number(nt[2]) >= Number(nf[1]) - Number(nf[2]);
  }
  const varchar = (t: string) => /^character varying(?:\((\d+)\))?$/.exec(t);
  const vf = varchar(from);
  if (vf || from === 'text') {
    if (to === 'text') return true;
    const vt = varchar(to);
    if (!vt) return false;
    if (vt[1] === undefined) return true;
    return !!vf && vf[1] !== undefined && Number(vt[1]) >= Number(vf[1]);
  }
  return false;
}

/** One line for people: "ALTER TABLE public.items: add column note text, rename column a to b". */
export function describeSchemaChange(ch: SchemaChange): string {
  if (ch.partition && ch.after) {
    const p = ch.partition;
    const what = { create: 'create partition', attach: 'attach partition', detach: 'detach partition', drop: 'drop partition', truncate: 'truncate partition' }[p.action];
    const bound = p.chain[0]?.bound ?? '';
    return `${ch.command} ${relLabel(ch.after)}: ${what} ${relLabel(p)}${bound ? ` (${bound})` : ''}${p.hasRows ? ', which held rows' : ''}`;
  }
  const plan = planSchemaChange(ch);
  const what = plan.steps.map(describeStep).join(', ') || (ch.error ? `not described (${ch.error})` : 'no change pgferry carries');
  return `${ch.command} ${relLabel(plan.table)}: ${what}`;
}

function describeStep(s: SchemaStep): string {
  switch (s.kind) {
    case 'create-table':
      return `create table (${s.shape.columns.map((c) => `${nameLabel(c.name)} ${c.type}`).join(', ')})`;
    case 'drop-table':
      return 'drop table';
    case 'drop-column':
      return `drop column ${nameLabel(s.name)}`;
    case 'rename-column':
      return `rename column ${nameLabel(s.from)} to ${nameLabel(s.to)}`;
    case 'drop-not-null':
      return `drop not null on ${nameLabel(s.name)}`;
    case 'alter-type':
      return `column ${nameLabel(s.name)} type ${s.from} → ${s.to}`;
    case 'add-column':
      return `add column ${nameLabel(s.column.name)} ${s.column.type}${s.fill !== null ? ' (existing rows: ' + JSON.stringify(s.fill) + ')' : ''}${s.column.notNull ? ' not null' : ''}`;
    case 'set-not-null':
      return `set not null on ${nameLabel(s.name)}`;
    case 'set-schema':
      return `move to schema ${nameLabel(s.schema)}`;
    case 'rename-table':
      return `rename to ${nameLabel(s.to)}`;
  }
}
