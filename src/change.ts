/**
 * The change model: what one message in a source's stream carries.
 *
 * One message = one source transaction, one ordered chunk of a large one
 * (seq 0..n, `last` on the final chunk), or a run of whole transactions
 * (changelog/wire.ts versions 3 and 4; each read as its own TxnMessage). Every
 * chunk carries the transaction's commit LSN, which is its position: replicas apply a transaction only if its
 * `lsn` is above the position they recorded, so re-sent transactions are
 * harmless. Values are PostgreSQL's own text form (exactly what `::text`
 * prints), or null; column types travel by name in `relations`.
 */
/** The envelope version of a single transaction or chunk (changelog/wire.ts; runs are version 4, messages holding COPY lines version 5); it reads 1 to 5. */
export const ENVELOPE_VERSION = 2;

export type Value = string | null;
export type Row = Record<string, Value>;

export interface ColumnInfo {
  name: string;
  /** format_type() of the column, e.g. "numeric(12,2)". */
  type: string;
  /** Part of the replica identity (primary key, identity index, or every column for FULL). */
  key: boolean;
}

export interface RelationInfo {
  schema: string;
  table: string;
  identity: 'default' | 'nothing' | 'full' | 'index';
  columns: ColumnInfo[];
}

export type RowChange =
  | { op: 'insert'; rel: string; new: Row }
  /** `new` omits columns whose value did not change and was not sent (unchanged TOAST). `old` is the identity of the row before. */
  | { op: 'update'; rel: string; old: Row; new: Row }
  | { op: 'delete'; rel: string; old: Row };

export interface TruncateChange {
  op: 'truncate';
  rels: string[];
  cascade: boolean;
  restartIdentity: boolean;
}

/** A column of a table as the source's catalog has it (schema changes, sql/migrations/schema-capture). */
export interface ShapeColumn {
  /** attnum: kept by a rename, never reused, so columns are matched by it across a change. */
  num: number;
  name: string;
  /** format_type() of the column, e.g. "character varying(10)". */
  type: string;
  notNull: boolean;
  /** Part of the primary key. */
  key: boolean;
  /** A stored generated column: computed by each database, never carried. */
  generated: boolean;
}

export interface TableShape {
  schema: string;
  table: string;
  columns: ShapeColumn[];
}

/** A partition key: its strategy (range, list, hash) and its columns in order (null: an expression is part of it). */
export interface PartitionKey {
  strategy: 'r' | 'l' | 'h';
  keys: string[] | null;
}

/**
 * Partition maintenance under a captured partitioned table (the `partition`
 * of a schema change of its root): a partition created, attached, detached,
 * dropped or truncated. pgferry publishes a partitioned table through its
 * root, and PostgreSQL sends none of these then; the source's event triggers
 * describe them (sql/migrations/schema-capture/0004).
 */
export interface PartitionChange {
  action: 'create' | 'attach' | 'detach' | 'drop' | 'truncate';
  /** The partition. */
  schema: string;
  table: string;
  /** The table it is (or was) a partition of. */
  parent: { schema: string; table: string } | null;
  /** Its bounds from itself up to the root: each with the key of the table it partitions. */
  chain: (PartitionKey & { bound: string })[];
  /** The partition's own key, when it is partitioned too. */
  partitionKey: PartitionKey | null;
  /** attach: the table held rows when it was attached. */
  hasRows?: boolean;
  /** attach: the table was captured on its own before (replicas that take it hold its rows). */
  captured?: boolean;
}

/**
 * A change to a captured table's definition, in its place between the data:
 * the table's shape before and after (never the statement's text). Applied
 * to replicas per their `schema_changes` policy (apply/schema-change.ts).
 */
export interface SchemaChange {
  op: 'schema';
  /** The source table's oid: the same table across renames. */
  oid: number;
  /** The command tag, for people: "ALTER TABLE", "CREATE TABLE". */
  command: string;
  /** The shape before; null for a table that is new to pgferry (created, or its earlier shape unknown). */
  before: TableShape | null;
  /** The shape after; null when the table was dropped (DROP TABLE) or the source could not describe it (`error` says why). */
  after: TableShape | null;
  /** Columns added with a default PostgreSQL stored once for existing rows: that value, as text. */
  fills: Record<string, string | null>;
  /** Columns added whose existing rows got values the log does not carry (a volatile default, an identity). */
  unfilled: string[];
  /** The source's event trigger could not describe the change. */
  error?: string;
  /** Partition maintenance of this (root) table; `before` and `after` are then its unchanged shape. */
  partition?: PartitionChange;
}

export type Change = RowChange | TruncateChange | SchemaChange;

export interface TxnMessage {
  /** The envelope version the message was read in (or is made for): 1 or 2 (a run's transactions read as 2), the same content either way. */
  v: 1 | 2;
  source: string;
  xid: number;
  /** Commit LSN: the transaction's position in source commit order. */
  lsn: string;
  /** End of the commit record: what the slot is acknowledged with once confirmed. */
  endLsn: string;
  /** Commit time, ISO 8601 with microseconds. */
  commitTime: string;
  seq: number;
  last: boolean;
  /** Relations referenced by `changes` in this message, keyed by "schema.table" (quoted when needed). */
  relations: Record<string, RelationInfo>;
  changes: Change[];
  /**
   * Set on a gap marker, which carries no changes: the log is missing source
   * transactions before this point (the slot was lost and created anew), so
   * every consumer that reaches it must be rebuilt. The reason, for people.
   */
  gap?: string;
  /**
   * The source history the position belongs to: positions only compare
   * within one history (a source re-created, restored, failed over or with
   * trigger capture re-installed starts a new one). Absent in messages
   * written before pgferry recorded it.
   */
  history?: string;
  /**
   * The identity of the stream the message was published to, stamped by the
   * publisher (changelog/stream.ts): a random id the stream gets when it is
   * created. A stream deleted and re-created, or a broker that lost its data,
   * has another one, so a position stored with the old one says nothing about
   * the new stream's offsets. Absent in messages of older pgferry.
   */
  stream?: string;
}

/**
 * A value derived from a relation description, computed once per
 * description that cannot change: a reader's descriptions are frozen and
 * shared by every message of the same tables (changelog/wire.ts), so apply
 * asks for the same derived values (key columns, registry key) change after
 * change. A description that is not frozen is derived anew each time.
 */
export function perRelation<T>(derive: (r: RelationInfo) => T): (r: RelationInfo) => T {
  const kept = new WeakMap<RelationInfo, T>();
  return (r) => {
    if (kept.has(r)) return kept.get(r) as T;
    const value = derive(r);
    if (Object.isFrozen(r) && Object.isFrozen(r.columns) && r.columns.every((c) => Object.isFrozen(c))) kept.set(r, value);
    return value;
  };
}

/** Key of a relation in `relations`: unambiguous for any schema and table name. */
export function relKey(schema: string, table: string): string {
  return JSON.stringify([schema, table]);
}

/** A name as psql would print it: bare when it can be, double-quoted otherwise. */
export const nameLabel = (s: string) => (/^[a-z_][a-z0-9_]*$/.test(s) ? s : `"${s.replace(/"/g, '""')}"`);

export function relLabel(r: { schema: string; table: string }): string {
  return `${nameLabel(r.schema)}.${nameLabel(r.table)}`;
}

/** Microseconds since the Unix epoch → ISO 8601 with all six fractional digits. */
export function microsToIso(micros: bigint): string {
  // As a number: exact for any time before the year 2255 (2^53 µs); capture converts one per transaction.
  const n = Number(micros);
  const seconds = Math.floor(n / 1_000_000);
  const rest = n - seconds * 1_000_000;
  if (seconds !== lastSecond.s) lastSecond = { s: seconds, text: new Date(seconds * 1000).toISOString().slice(0, 19) }; // 2026-01-01T00:00:00
  return `${lastSecond.text}.${String(rest).padStart(6, '0')}Z`;
}

/** The date and time of the last whole second converted: consecutive commits mostly share it. */
let lastSecond = { s: NaN, text: '' };
