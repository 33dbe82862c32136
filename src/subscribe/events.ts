/**
 * What an application's handler receives: the change log's messages turned
 * into one event per row change, with the metadata an application needs and
 * an idempotency key that is the same on every delivery.
 *
 * Values stay in PostgreSQL's own text form (exactly what `::text` prints, or
 * null), as in the log: a numeric keeps every digit, a bigint stays exact, a
 * timestamp keeps its microseconds. `columns` says each column's type.
 */
import type { ColumnInfo, Row, SchemaChange, TxnMessage } from '../change';

/** `schema`: the table's definition changed (ALTER TABLE, CREATE TABLE), in its place between the data. */
export type Operation = 'insert' | 'update' | 'delete' | 'truncate' | 'schema';
export const OPERATIONS: readonly Operation[] = ['insert', 'update', 'delete', 'truncate', 'schema'];

export interface ChangeEvent {
  /**
   * Idempotency key, stable across redeliveries and replays:
   * `<source>/<lsn>/<index>`. Store it (or compare positions) to make an
   * at-least-once handler's effects happen once.
   */
  id: string;
  source: string;
  /** Commit LSN of the source transaction: its position in commit order. */
  lsn: string;
  /** Source commit time, ISO 8601 with microseconds. */
  commitTime: string;
  xid: number;
  /** Ordinal of this change within its transaction (counted over all its changes, before any filter). */
  index: number;
  schema: string;
  table: string;
  operation: Operation;
  /** Replica-identity columns of the row (primary key by default); null for truncate. */
  key: Row | null;
  /** The row after an insert or update. An update omits unchanged TOASTed columns PostgreSQL did not send. */
  new: Row | null;
  /** The row before an update or delete: its identity columns, or every column with REPLICA IDENTITY FULL. */
  old: Row | null;
  /** Name, type (format_type) and key flag of each column. */
  columns: ColumnInfo[];
  /** For truncate: CASCADE and RESTART IDENTITY as the source ran it. */
  truncate?: { cascade: boolean; restartIdentity: boolean };
  /** For schema: the table's shape before and after (columns matched by `num`, which a rename keeps). `columns` is the shape after. */
  schemaChange?: Omit<SchemaChange, 'op'>;
}

export interface TransactionEvent {
  source: string;
  lsn: string;
  commitTime: string;
  xid: number;
  /** The transaction's changes that pass the subscriber's filter, in source order. */
  changes: ChangeEvent[];
}

/** Which changes a subscriber wants: tables as "schema.table" (or a bare name, meaning public), operations by name. */
export interface ChangeFilter {
  tables?: readonly (string | { schema: string; table: string })[];
  operations?: readonly Operation[];
}

export interface CompiledFilter {
  tables: Set<string> | null;
  operations: Set<Operation> | null;
}

const tableKey = (schema: string, table: string) => JSON.stringify([schema, table]);

/** Check and compile a filter once; a bad table or operation name is an error naming it. */
export function compileFilter(f: ChangeFilter, what: string): CompiledFilter {
  const { filter, problems } = checkFilter(f);
  if (problems.length) throw new TypeError(`${what}: ${problems.join('; ')}`);
  return filter;
}

/** The compiled filter and what is wrong with the one given (nothing, when it is fine). */
export function checkFilter(f: ChangeFilter): { filter: CompiledFilter; problems: string[] } {
  const problems: string[] = [];
  let tables: Set<string> | null = null;
  if (f.tables) {
    tables = new Set();
    for (const t of f.tables) {
      if (typeof t === 'object' && t && typeof t.schema === 'string' && typeof t.table === 'string') {
        tables.add(tableKey(t.schema, t.table));
        continue;
      }
      const s = String(t);
      const dot = s.indexOf('.');
      if (!s || dot === 0 || dot === s.length - 1) problems.push(`table '${s}' is not a table name: write "schema.table", or { schema, table } for names with dots`);
      else tables.add(dot < 0 ? tableKey('public', s) : tableKey(s.slice(0, dot), s.slice(dot + 1)));
    }
  }
  let operations: Set<Operation> | null = null;
  if (f.operations) {
    operations = new Set();
    for (const op of f.operations) {
      if (OPERATIONS.includes(op)) operations.add(op);
      else problems.push(`operation '${String(op)}' is not one of ${OPERATIONS.join(', ')}`);
    }
  }
  return { filter: { tables, operations }, problems };
}

/** Parse a comma-separated list (CLI flags) into filter entries. */
export function splitList(s: string | undefined): string[] | undefined {
  if (s === undefined) return undefined;
  return s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
}

/**
 * The events of one change-log message (one transaction, or one chunk of a
 * large one), numbered from `firstIndex`, keeping those that pass the filter.
 * Returns the events and the index the next chunk starts at. A TRUNCATE of
 * several tables is one event per table.
 */
export function eventsOf(m: TxnMessage, firstIndex: number, filter: CompiledFilter): { events: ChangeEvent[]; nextIndex: number } {
  const events: ChangeEvent[] = [];
  let index = firstIndex;
  const base = { source: m.source, lsn: m.lsn, commitTime: m.commitTime, xid: m.xid };
  const wanted = (schema: string, table: string, op: Operation) =>
    (!filter.tables || filter.tables.has(tableKey(schema, table))) && (!filter.operations || filter.operations.has(op));
  const relation = (key: string) => {
    const r = m.relations[key];
    if (!r) throw new Error(`change-log message ${m.lsn}#${m.seq} references relation ${key} without describing it`);
    return r;
  };
  for (const ch of m.changes) {
    if (ch.op === 'truncate') {
      for (const k of ch.rels) {
        const r = relation(k);
        const i = index++;
        if (!wanted(r.schema, r.table, 'truncate')) continue;
        events.push({
          id: `${m.source}/${m.lsn}/${i}`,
          ...base,
          index: i,
          schema: r.schema,
          table: r.table,
          operation: 'truncate',
          key: null,
          new: null,
          old: null,
          columns: r.columns,
          truncate: { cascade: ch.cascade, restartIdentity: ch.restartIdentity },
        });
      }
      continue;
    }
    if (ch.op === 'schema') {
      const shape = ch.after ?? ch.before;
      const i = index++;
      if (!shape || !wanted(shape.schema, shape.table, 'schema')) continue;
      const { op: _op, ...schemaChange } = ch;
      events.push({
        id: `${m.source}/${m.lsn}/${i}`,
        ...base,
        index: i,
        schema: shape.schema,
        table: shape.table,
        operation: 'schema',
        key: null,
        new: null,
        old: null,
        columns: (ch.after?.columns ?? []).filter((c) => !c.generated).map((c) => ({ name: c.name, type: c.type, key: c.key })),
        schemaChange,
      });
      continue;
    }
    const r = relation(ch.rel);
    const i = index++;
    if (!wanted(r.schema, r.table, ch.op)) continue;
    const row = ch.op === 'insert' ? ch.new : ch.old;
    const key: Row = {};
    for (const c of r.columns) if (c.key && c.name in row) key[c.name] = row[c.name];
    events.push({
      id: `${m.source}/${m.lsn}/${i}`,
      ...base,
      index: i,
      schema: r.schema,
      table: r.table,
      operation: ch.op,
      key,
      new: ch.op === 'delete' ? null : ch.new,
      old: ch.op === 'insert' ? null : ch.old,
      columns: r.columns,
    });
  }
  return { events, nextIndex: index };
}
