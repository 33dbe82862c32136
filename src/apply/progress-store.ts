/**
 * The replica's checkpoint: its row in pgferry.progress (sql/migrations/target/0001-bookkeeping.sql),
 * the only module that reads or writes it. The row says which source a
 * replica follows, the last source transaction it holds (`lsn`, of source
 * history `history`) and the last stream message it consumed (`offset`, in
 * the stream of identity `stream_id`: sql/migrations/target/0003).
 *
 * Every write takes the caller's connection, because the checkpoint commits
 * in the same replica transaction as the data it describes: apply's batch,
 * a snapshot's swap, a rewind. Shaped like the subscribers' PositionStore
 * (src/subscribe/positions.ts), which keeps an application's positions.
 *
 * Its statements are the consts below: no other module's code names
 * pgferry.progress (test/unit/layers.test.ts checks).
 */
import type pg from 'pg';
import { ZERO_LSN } from '../lsn';
import { escapeLiteral } from '../pg';
import { SQLSTATE, sqlState, UnavailableError } from '../errors';
import type { LogPosition } from '../changelog/protocol';

type Queryable = Pick<pg.ClientBase, 'query'>;

export interface StoredProgress extends LogPosition {
  source: string;
}

/** What a batch adds to the checkpoint. */
export interface ProgressAdvance extends LogPosition {
  txns: number;
  changes: number;
  /** Commit time of the last transaction applied (null: keep the stored one). */
  lastCommitTime: string | null;
}

/** How long a batch waits for its checkpoint row before it reports the wait and retries. */
export const LOCK_WAIT_MS = 30_000;

/** The checkpoint table, for messages that name it. */
export const PROGRESS_TABLE = 'pgferry.progress';

const GET = `
SELECT replica, source, lsn::text AS lsn, stream_offset, history FROM pgferry.progress WHERE replica = $1`;

/** The row `lock` needs, made if missing (without a history: taken from the log). */
const INIT = `
INSERT INTO pgferry.progress (replica, source) VALUES ($1, $2)
ON CONFLICT (replica) DO NOTHING`;

/**
 * Lock this replica's progress row for the length of the apply transaction.
 * A second worker applying the same replica waits here, then sees the new
 * position: two workers can never apply the same source transaction twice.
 * (The row is created by INIT.)
 */
const LOCK = `
SELECT lsn::text AS lsn, stream_offset::text AS stream_offset, history, stream_id, source
FROM pgferry.progress WHERE replica = $1 FOR UPDATE`;

/**
 * A replica init/up meets for the first time: it belongs to the source's
 * history as it is now ($3), so what the stream still holds of an older
 * history (before pgferry was re-installed, or the source re-created) is
 * not applied to it; and it reads the stream of identity $4 from its start
 * (a stream re-created before it read anything is not its log). An existing
 * row is left alone.
 */
const CREATE = `
INSERT INTO pgferry.progress (replica, source, history, stream_id) VALUES ($1, $2, $3, $4)
ON CONFLICT (replica) DO NOTHING`;

/**
 * Set where a replica continues (rewind, resync): it holds every source
 * transaction up to $3 of source history $5 (null: taken from the log), and
 * reads the stream of identity $6 (null: taken from the stream) after offset
 * $4. Counters are kept.
 */
const SET = `
INSERT INTO pgferry.progress (replica, source, lsn, stream_offset, history, stream_id)
VALUES ($1, $2, $3::pg_lsn, $4::bigint, $5::text, $6::text)
ON CONFLICT (replica) DO UPDATE
SET source = EXCLUDED.source, lsn = EXCLUDED.lsn, stream_offset = EXCLUDED.stream_offset, history = EXCLUDED.history,
    stream_id = EXCLUDED.stream_id, updated_at = now()`;

/**
 * A replica filled from a snapshot: it holds every source transaction up to
 * the snapshot's position (of source history $5; null: taken from the log),
 * and reads the stream from the given offset (the newest message when the
 * snapshot was taken, in the stream of identity $6; NULL: from the
 * beginning). A row that never applied anything (made by init/up) is taken
 * over.
 */
const START = `
INSERT INTO pgferry.progress (replica, source, lsn, stream_offset, history, stream_id)
VALUES ($1, $2, $3::pg_lsn, $4::bigint, $5::text, $6::text)
ON CONFLICT (replica) DO UPDATE
SET source = EXCLUDED.source, lsn = EXCLUDED.lsn, stream_offset = EXCLUDED.stream_offset, history = EXCLUDED.history,
    stream_id = EXCLUDED.stream_id, updated_at = now()
WHERE pgferry.progress.stream_offset IS NULL AND pgferry.progress.lsn = '0/0' AND pgferry.progress.txns_applied = 0`;

/** A batch committed: the new position, the counters added to, the last commit time, history and stream (null: kept). */
const ADVANCE = `
UPDATE pgferry.progress
SET lsn = $2::pg_lsn,
    stream_offset = $3::bigint,
    txns_applied = txns_applied + $4::bigint,
    changes_applied = changes_applied + $5::bigint,
    last_commit_time = COALESCE($6::timestamptz, last_commit_time),
    history = COALESCE($7::text, history),
    stream_id = COALESCE($8::text, stream_id),
    updated_at = now()
WHERE replica = $1`;

/** What `get` and `lock` read of the row. */
interface ProgressRow {
  source: string;
  lsn: string | null;
  stream_offset: string | number | null;
  history?: string | null;
  stream_id?: string | null;
}

function fromRow(r: ProgressRow): StoredProgress {
  return {
    source: r.source,
    lsn: r.lsn ?? ZERO_LSN,
    offset: r.stream_offset === null ? null : Number(r.stream_offset),
    history: r.history ?? null,
    stream: r.stream_id ?? null,
  };
}

export const ProgressStore = {
  /** The replica's checkpoint, or null when it has none. */
  async get(q: Queryable, replica: string): Promise<StoredProgress | null> {
    const r = (await q.query<ProgressRow>(GET, [replica])).rows[0];
    return r ? fromRow(r) : null;
  },

  /** The row a replica init/up meets for the first time: it belongs to the source's history and the stream as they are now. An existing row is left alone. */
  async create(q: Queryable, replica: string, source: string, history: string, stream: string | null): Promise<void> {
    await q.query(CREATE, [replica, source, history, stream]);
  },

  /**
   * Lock the replica's checkpoint for the length of the caller's transaction
   * (creating the row if it has none) and return it. A second worker applying
   * the same replica waits here, then sees the new position: two workers can
   * never apply the same source transaction twice.
   */
  async lock(q: Queryable, replica: string, source: string, waitMs = LOCK_WAIT_MS): Promise<StoredProgress> {
    // A bounded wait: a session that holds the row and never ends (a client gone without the server
    // noticing, an open transaction left in psql) must show as a retried error, not as a replica
    // "running" that never moves. The replica's own lock_timeout comes back for the rest of the batch.
    // One round trip (the simple protocol runs the statements in order): a batch pays it every time.
    const lit = (v: string) => escapeLiteral(v);
    const sql =
      `${INIT.replace('$1', () => lit(replica)).replace('$2', () => lit(source))}; ` + // functions: a name may hold `$&`
      `SET LOCAL lock_timeout = ${lit(`${Math.max(1, Math.round(waitMs))}ms`)}; ` +
      `${LOCK.replace('$1', () => lit(replica))}; ` +
      `SET LOCAL lock_timeout TO DEFAULT`;
    let row: ProgressRow;
    try {
      const results = (await q.query(sql)) as unknown as pg.QueryResult<ProgressRow>[];
      row = results[2].rows[0];
    } catch (err) {
      if (sqlState(err) !== SQLSTATE.lockNotAvailable) throw err;
      throw new UnavailableError(
        `replica '${replica}': its checkpoint row in ${PROGRESS_TABLE} has been locked by another session for ${waitMs / 1000} s (another worker's batch, or a transaction left open on the replica); ` +
          `retrying. If it lasts, find the session with SELECT pid, state, xact_start, query FROM pg_stat_activity WHERE pid = ANY (pg_blocking_pids(<a batch's pid>)) on the replica, and end it`,
        { cause: err },
      );
    }
    return fromRow(row);
  },

  /** Set where a replica continues (rewind, resync): it holds everything up to `at.lsn` and reads the stream after `at.offset`. Counters are kept. */
  async set(q: Queryable, replica: string, source: string, at: LogPosition): Promise<void> {
    await q.query(SET, [replica, source, at.lsn, at.offset, at.history ?? null, at.stream ?? null]);
  },

  /** A replica filled from a snapshot starts there; a row that never applied anything (made by init/up) is taken over. */
  async start(q: Queryable, replica: string, source: string, at: LogPosition): Promise<void> {
    await q.query(START, [replica, source, at.lsn, at.offset, at.history ?? null, at.stream ?? null]);
  },

  /** A batch committed: the new position and what it applied, in the batch's own transaction. */
  async advance(q: Queryable, replica: string, to: ProgressAdvance): Promise<void> {
    await q.query(ADVANCE, [replica, to.lsn, to.offset, to.txns, to.changes, to.lastCommitTime, to.history ?? null, to.stream ?? null]);
  },
};
