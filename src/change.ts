/**
 * The change model: what one message in a source's stream carries.
 *
 * One message = one source transaction, or one ordered chunk of a large one
 * (seq 0..n, `last` on the final chunk). Every chunk carries the transaction's
 * commit LSN, which is its position: replicas apply a transaction only if its
 * `lsn` is above the position they recorded, so re-sent transactions are
 * harmless. Values are PostgreSQL's own text form (exactly what `::text`
 * prints), or null; column types travel by name in `relations`.
 */
/** The envelope version pgferry writes (changelog/wire.ts); it reads 1 and 2. */
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

export type Change = RowChange | TruncateChange;

export interface TxnMessage {
  /** The envelope version the message was read in (or is made for): 1 or 2, the same content either way. */
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
  const ms = micros / 1000n;
  const rest = Number(((micros % 1_000_000n) + 1_000_000n) % 1_000_000n);
  const base = new Date(Number(ms)).toISOString(); // 2026-01-01T00:00:00.123Z
  return `${base.slice(0, 19)}.${String(rest).padStart(6, '0')}Z`;
}
