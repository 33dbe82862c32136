/**
 * The replica's checkpoint: its row in pgferry.progress (sql/migrations/target/0001-bookkeeping.sql),
 * the only module that reads or writes it. The row says which source a
 * replica follows, the last source transaction it holds (`lsn`, of source
 * history `history`) and the last stream message it consumed (`offset`).
 *
 * Every write takes the caller's connection, because the checkpoint commits
 * in the same replica transaction as the data it describes: apply's batch,
 * a snapshot's swap, a rewind. Shaped like the subscribers' PositionStore
 * (src/subscribe/positions.ts), which keeps an application's positions.
 */
import type pg from 'pg';
import { ZERO_LSN } from '../lsn';
import { loadSql } from '../sql';
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

const SQL = {
  get: 'target/progress-get.sql',
  init: 'target/progress-init.sql',
  lock: 'target/progress-lock.sql',
  create: 'target/progress-new.sql',
  set: 'target/progress-set.sql',
  start: 'target/progress-start.sql',
  advance: 'target/progress-update.sql',
} as const;

const sql = (k: keyof typeof SQL) => loadSql(SQL[k]);

function fromRow(r: { source: string; lsn: string | null; stream_offset: string | number | null; history?: string | null }): StoredProgress {
  return { source: r.source, lsn: r.lsn ?? ZERO_LSN, offset: r.stream_offset === null ? null : Number(r.stream_offset), history: r.history ?? null };
}

export const ProgressStore = {
  /** The replica's checkpoint, or null when it has none. */
  async get(q: Queryable, replica: string): Promise<StoredProgress | null> {
    const r = (await q.query(sql('get'), [replica])).rows[0];
    return r ? fromRow(r) : null;
  },

  /** The row a replica init/up meets for the first time: it belongs to the source's history as it is now. An existing row is left alone. */
  async create(q: Queryable, replica: string, source: string, history: string): Promise<void> {
    await q.query(sql('create'), [replica, source, history]);
  },

  /**
   * Lock the replica's checkpoint for the length of the caller's transaction
   * (creating the row if it has none) and return it. A second worker applying
   * the same replica waits here, then sees the new position: two workers can
   * never apply the same source transaction twice.
   */
  async lock(q: Queryable, replica: string, source: string): Promise<StoredProgress> {
    await q.query(sql('init'), [replica, source]);
    return fromRow((await q.query(sql('lock'), [replica])).rows[0]);
  },

  /** Set where a replica continues (rewind, resync): it holds everything up to `at.lsn` and reads the stream after `at.offset`. Counters are kept. */
  async set(q: Queryable, replica: string, source: string, at: LogPosition): Promise<void> {
    await q.query(sql('set'), [replica, source, at.lsn, at.offset, at.history ?? null]);
  },

  /** A replica filled from a snapshot starts there; a row that never applied anything (made by init/up) is taken over. */
  async start(q: Queryable, replica: string, source: string, at: LogPosition): Promise<void> {
    await q.query(sql('start'), [replica, source, at.lsn, at.offset, at.history ?? null]);
  },

  /** A batch committed: the new position and what it applied, in the batch's own transaction. */
  async advance(q: Queryable, replica: string, to: ProgressAdvance): Promise<void> {
    await q.query(sql('advance'), [replica, to.lsn, to.offset, to.txns, to.changes, to.lastCommitTime, to.history ?? null]);
  },
};
