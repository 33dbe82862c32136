/**
 * A replica's apply session: batch after batch (apply-batch.ts) on one
 * replica connection and one stream consumer, until it is stopped (pause,
 * cancellation, worker shutdown: `signal`) or has run `maxRunMs`; the replica
 * workflow then records what it did and starts the next one. The shape of
 * PeerDB's sync loop: one long, heartbeating activity instead of an activity
 * per batch, so a batch costs a replica transaction, not a Temporal round
 * trip and a new consumer.
 *
 * Every batch still commits its data and checkpoint together; the session
 * adds no state of its own to the replica. The consumer keeps reading ahead
 * (its prefetch) while a batch commits, so the next batch starts with
 * messages in hand.
 */
import { applyBatch, ApplyBatchOptions, BatchResult, StreamFeed } from './apply-batch';

export interface ApplySessionOptions extends ApplyBatchOptions {
  /** Return at the first batch boundary after this long. */
  maxRunMs: number;
  /** After each committed batch, with the session's totals so far (heartbeat details, metrics). */
  onBatch?: (total: SessionResult, batch: BatchResult) => void;
}

/** What a session applied: the last batch's position, the sums of its batches. */
export interface SessionResult extends BatchResult {
  batches: number;
}

/** The heartbeat details of an apply session: its totals so far and its recent rate (changes/s). */
export interface ApplyProgress extends SessionResult {
  rowsPerSecond: number | null;
}

export function emptySession(): SessionResult {
  return { appliedLsn: '', offset: null, txns: 0, changes: 0, lastCommitTime: null, caughtUp: false, skipped: 0, netTxns: 0, batches: 0 };
}

/** Add one committed batch to a session's totals. */
export function addToSession(total: SessionResult, b: BatchResult): SessionResult {
  return {
    appliedLsn: b.appliedLsn,
    offset: b.offset,
    txns: total.txns + b.txns,
    changes: total.changes + b.changes,
    lastCommitTime: b.lastCommitTime ?? total.lastCommitTime,
    caughtUp: b.caughtUp,
    skipped: total.skipped + b.skipped,
    netTxns: (total.netTxns ?? 0) + (b.netTxns ?? 0),
    batches: total.batches + 1,
  };
}

export async function applySession(o: ApplySessionOptions): Promise<SessionResult> {
  const feed = new StreamFeed();
  const started = Date.now();
  let total = emptySession();
  try {
    do {
      const batch = await applyBatch(o, feed);
      total = addToSession(total, batch);
      o.onBatch?.(total, batch);
      await feed.checkIdle(o, batch.txns > 0 || batch.skipped > 0 || !batch.caughtUp);
    } while (!o.signal?.aborted && Date.now() - started < o.maxRunMs);
    return total;
  } finally {
    await feed.close();
  }
}
