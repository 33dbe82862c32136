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

// Each statement takes the positions table's escaped, schema-qualified name (pg.escapeIdentifier).

/**
 * Positions of application subscribers, in a table of the application's
 * choosing (`table` is its escaped, schema-qualified name).
 * One row per subscriber name: the last source transaction it finished
 * (commit LSN), the stream offset of that transaction's last message, and
 * the identity of the stream that offset is in (null: not known yet; see
 * src/changelog/protocol.ts).
 * Written after each handled transaction, or in the handler's own
 * transaction when the subscriber is transactional. Idempotent.
 */
const createPositionsTable = (table: string) => `
CREATE TABLE IF NOT EXISTS ${table} (
  subscriber    text        PRIMARY KEY,
  source        text        NOT NULL,
  lsn           pg_lsn      NOT NULL,
  stream_offset bigint,
  stream_id     text,
  txns          bigint      NOT NULL DEFAULT 0,
  changes       bigint      NOT NULL DEFAULT 0,
  updated_at    timestamptz NOT NULL DEFAULT now()
)`;

/** A positions table made by an older pgferry lacks stream_id (looked up first: ALTER TABLE locks the table even when it has it). */
const positionsHaveStream = `
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = pg_catalog.to_regclass($1) AND attname = 'stream_id' AND NOT attisdropped) AS has`;
const addStreamColumn = (table: string) => `ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS stream_id text`;

const positionGet = (table: string) => `
SELECT source, lsn::text AS lsn, stream_offset::text AS stream_offset, stream_id, txns::text AS txns, changes::text AS changes
FROM ${table}
WHERE subscriber = $1`;

/** A new subscriber's starting point (from: 'now' | 'beginning' | position); an existing one keeps its own. */
const positionStart = (table: string) => `
INSERT INTO ${table} (subscriber, source, lsn, stream_offset, stream_id) VALUES ($1, $2, $3::pg_lsn, $4, $5)
ON CONFLICT (subscriber) DO NOTHING`;

/**
 * Move a subscriber forward, only from where this process last left it: if
 * another process moved it (the same subscriber running twice), no row is
 * updated and the caller stops instead of delivering twice.
 */
const positionSet = (table: string) => `
UPDATE ${table}
SET lsn = $3::pg_lsn, stream_offset = $4, txns = txns + $5, changes = changes + $6, stream_id = COALESCE($7, stream_id), updated_at = now()
WHERE subscriber = $1 AND lsn = $2::pg_lsn`;

interface PositionRow {
  source: string;
  lsn: string;
  stream_offset: string | null;
  stream_id: string | null;
  txns: string;
  changes: string;
}

export class PositionStore {
  private readonly sql: Record<'create' | 'addStream' | 'get' | 'start' | 'set', string>;
  private readonly name: string;

  constructor(
    readonly db: pg.Pool,
    table: string | PositionTable = DEFAULT_POSITION_TABLE,
  ) {
    const t = typeof table === 'string' ? { table } : table;
    const name = (t.schema ? `${pg.escapeIdentifier(t.schema)}.` : '') + pg.escapeIdentifier(t.table);
    this.name = name;
    this.sql = { create: createPositionsTable(name), addStream: addStreamColumn(name), get: positionGet(name), start: positionStart(name), set: positionSet(name) };
    this.label = t.schema ? `${t.schema}.${t.table}` : t.table;
  }

  /** The table's name as the user gave it, for messages. */
  readonly label: string;

  async ensureTable(): Promise<void> {
    await this.db.query(this.sql.create);
    const has = (await this.db.query(positionsHaveStream, [this.name])).rows[0].has;
    if (!(has === true || has === 't')) await this.db.query(this.sql.addStream);
  }

  async get(name: string, q: Queryable = this.db): Promise<StoredPosition | null> {
    const r = (await q.query<PositionRow>(this.sql.get, [name])).rows[0];
    if (!r) return null;
    return {
      source: r.source,
      lsn: r.lsn,
      offset: r.stream_offset === null ? null : Number(r.stream_offset),
      stream: r.stream_id ?? null,
      txns: Number(r.txns),
      changes: Number(r.changes),
    };
  }

  /** Record a new subscriber's starting point (no-op when it has one) and return what is stored. */
  async start(name: string, source: string, from: LogPosition): Promise<StoredPosition> {
    await this.db.query(this.sql.start, [name, source, from.lsn, from.offset, from.stream ?? null]);
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
    const r = await q.query(this.sql.set, [name, expected, to.lsn, to.offset, txns, changes, to.stream ?? null]);
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
