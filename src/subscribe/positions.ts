/**
 * Where subscribers keep their positions: a table in a PostgreSQL database of
 * the application's choosing (by default `pgferry_subscribers` in the first
 * schema of the connection's search_path). Keeping it in the application's
 * own database lets a handler write its effects and the position in one
 * transaction: exactly-once effects from an at-least-once log.
 */
import pg from 'pg';
import { ConfigError } from '../errors';
import type { LogPosition } from '../changelog/cursor';
import { loadSql } from '../sql';

export interface PositionTable {
  schema?: string;
  table: string;
}

export const DEFAULT_POSITION_TABLE = 'pgferry_subscribers';

export interface StoredPosition extends LogPosition {
  source: string;
  txns: number;
  changes: number;
}

type Queryable = Pick<pg.ClientBase, 'query'>;

export class PositionStore {
  private readonly sql: Record<'create' | 'get' | 'start' | 'set', string>;

  constructor(
    readonly db: pg.Pool,
    table: string | PositionTable = DEFAULT_POSITION_TABLE,
  ) {
    const t = typeof table === 'string' ? { table } : table;
    const name = (t.schema ? `${pg.escapeIdentifier(t.schema)}.` : '') + pg.escapeIdentifier(t.table);
    const load = (file: string) => loadSql(`subscriber/${file}`).replaceAll('%TABLE%', name);
    this.sql = { create: load('positions.sql'), get: load('position-get.sql'), start: load('position-start.sql'), set: load('position-set.sql') };
    this.label = t.schema ? `${t.schema}.${t.table}` : t.table;
  }

  /** The table's name as the user gave it, for messages. */
  readonly label: string;

  async ensureTable(): Promise<void> {
    await this.db.query(this.sql.create);
  }

  async get(name: string, q: Queryable = this.db): Promise<StoredPosition | null> {
    const r = (await q.query(this.sql.get, [name])).rows[0];
    if (!r) return null;
    return {
      source: r.source,
      lsn: r.lsn,
      offset: r.stream_offset === null ? null : Number(r.stream_offset),
      txns: Number(r.txns),
      changes: Number(r.changes),
    };
  }

  /** Record a new subscriber's starting point (no-op when it has one) and return what is stored. */
  async start(name: string, source: string, from: LogPosition): Promise<StoredPosition> {
    await this.db.query(this.sql.start, [name, source, from.lsn, from.offset]);
    const stored = await this.get(name);
    if (!stored) throw new Error(`subscriber '${name}': its row in ${this.label} vanished right after it was written`);
    if (stored.source !== source) {
      throw new ConfigError(
        `subscriber '${name}' reads source '${stored.source}' (its row in ${this.label}), not '${source}'; ` +
          `use another subscriber name, or delete its row to start it anew on '${source}'`,
      );
    }
    return stored;
  }

  /**
   * Move a subscriber from `expected` to `to`, on `q` (the handler's
   * transaction, or the pool). Throws if someone else moved it meanwhile.
   */
  async advance(q: Queryable, name: string, expected: string, to: LogPosition, txns: number, changes: number): Promise<void> {
    const r = await q.query(this.sql.set, [name, expected, to.lsn, to.offset, txns, changes]);
    if (r.rowCount === 1) return;
    const now = await this.get(name, q);
    throw new ConfigError(
      now
        ? `subscriber '${name}': its position in ${this.label} moved from ${expected} to ${now.lsn} under it: ` +
            `another process runs the same subscriber; run each subscriber name in one process only`
        : `subscriber '${name}': its row in ${this.label} was deleted while it ran; start it again to begin anew`,
    );
  }
}
