/**
 * `pgferry replica rewind <name> --to <position>`: a replica restored from a
 * backup taken at source position P continues from there. Positions compare
 * only within one source history (capture/history.ts), so P is read in the
 * replica's history: the one its checkpoint stores (a backup that kept
 * pgferry's bookkeeping), else the source's history now. The stream is
 * searched, among that history's messages, for the last one of a
 * transaction at or below P; the replica's progress row is set to (P, that
 * offset, that history), so its next batch applies every transaction of the
 * history above P. If the stream no longer reaches back to P, holds nothing
 * of the history, or the history ended below P (P is then a position of
 * another history), nothing is changed.
 */
import type { ChannelModel } from 'amqplib';
import { ConfigError, GapError } from '../errors';
import { decodeTxns, isStreamMarker } from '../changelog/envelope';
import { compareLsn, normalizeLsn } from '../lsn';
import { StreamReader } from '../changelog/stream';
import { ensureTargetSchema } from './target';
import { connectPg } from '../pg';
import { PROGRESS_TABLE, ProgressStore } from './progress-store';

export interface RewindResult {
  lsn: string;
  /** Offset of the last message at or below the position (the replica reads after it). */
  offset: number;
  /** The first transaction the replica will apply, if the stream already holds one. */
  next: string | null;
  /** The source history the position belongs to (null: the stream records none). */
  history: string | null;
}

/**
 * Where a replica holding everything of `history` up to `position` continues:
 * the offset of the last message of that history at or below it. Messages of
 * other histories are not compared (those before the history's first are
 * passed over); messages that record no history (written before pgferry
 * recorded it) count as the history's. `history` null: the stream's own,
 * whatever it is (a stream that records none).
 */
export async function findRewindOffset(rabbit: ChannelModel, source: string, position: string, history: string | null = null, replica = ''): Promise<{ offset: number; next: string | null; stream: string | null }> {
  const reader = await StreamReader.open(rabbit, source, 'first', 256);
  const of = history ? `source history ${history}, which replica '${replica}' belongs to` : '';
  try {
    let last: { offset: number; lsn: string } | null = null;
    let seen = false;
    let stream: string | null = null; // the stream's identity, from its messages
    for (let m = await reader.next(2000); m; m = await reader.next(1000)) {
      stream = m.stream ?? stream;
      // A run's transactions one by one, all at its offset: a position inside a run continues there, skipping those at or below it.
      for (const txn of decodeTxns(m.body)) {
        if (isStreamMarker(txn.lsn)) continue; // the stream's marker, no transaction: it proves nothing about reaching back to the position
        if (history && txn.history && txn.history !== history) {
          if (!seen) continue; // before the replica's history began
          // The history ended and another followed: a position above its end is one of that other history.
          if (!last || compareLsn(position, last.lsn) > 0) {
            throw new GapError(
              `position ${position} is not in ${of}: the stream holds ${history} up to ${last ? `${last.lsn} (offset ${last.offset})` : 'no transaction'}, ` +
                `then continues with ${txn.history} at offset ${m.offset}; nothing was changed. The source was re-created, restored, failed over or re-installed: ` +
                `give a position of ${history}, or rebuild the replica with pgferry replica resync ${replica}`,
            );
          }
          return { offset: last.offset, next: null, stream };
        }
        seen = true;
        if (txn.gap) continue; // a marker: no transaction to hold
        if (compareLsn(txn.lsn, position) > 0) {
          if (last === null) {
            throw new GapError(
              `the stream of source '${source}' no longer reaches back to ${position}: the oldest transaction it holds is ${txn.lsn} (offset ${m.offset}); ` +
                `nothing was changed${history ? ` (positions read in ${of})` : ''}. Rebuild the replica with pgferry replica resync instead`,
            );
          }
          return { offset: last.offset, next: txn.lsn, stream };
        }
        last = { offset: m.offset, lsn: txn.lsn };
      }
    }
    if (history && !seen) {
      throw new GapError(`the stream of source '${source}' holds no transaction of ${of}; nothing was changed. Rebuild the replica with pgferry replica resync ${replica}`);
    }
    if (last === null) throw new GapError(`the stream of source '${source}' is empty: there is nothing to continue from; nothing was changed`);
    return { offset: last.offset, next: null, stream };
  } finally {
    await reader.close();
  }
}

export async function rewindReplica(o: {
  rabbit: ChannelModel;
  source: string;
  replica: string;
  replicaUrl: string;
  to: string;
  /** The source's history now (capture mode's), for a replica whose checkpoint records none; without it, the stream's newest. */
  sourceHistory?: () => Promise<string>;
}): Promise<RewindResult> {
  let lsn: string;
  try {
    lsn = normalizeLsn(o.to);
  } catch {
    throw new ConfigError(`--to '${o.to}' is not a source position; give an LSN such as 16/B374D848 (pg_current_wal_lsn() on the source when the backup was taken)`);
  }
  const c = await connectPg(`replica '${o.replica}'`, o.replicaUrl);
  try {
    // Read-only until the position is found: a refused rewind leaves a restored copy as it was.
    const kept = (await c.query('SELECT to_regclass($1) IS NOT NULL AS yes', [PROGRESS_TABLE])).rows[0].yes;
    const stored = kept === true || kept === 't' ? await ProgressStore.get(c, o.replica) : null;
    const history = stored?.history ?? (o.sourceHistory ? await o.sourceHistory() : await newestHistory(o.rabbit, o.source));
    const found = await findRewindOffset(o.rabbit, o.source, lsn, history, o.replica);
    await ensureTargetSchema(c);
    // Waits for a batch in flight (it holds the row) and takes effect at the next one.
    await ProgressStore.set(c, o.replica, o.source, { lsn, offset: found.offset, history, stream: found.stream });
    return { lsn, offset: found.offset, next: found.next, history };
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** The history of the stream's newest message that records one (null: none does). */
async function newestHistory(rabbit: ChannelModel, source: string): Promise<string | null> {
  const reader = await StreamReader.open(rabbit, source, 'first', 256);
  try {
    let history: string | null = null;
    for (let m = await reader.next(2000); m; m = await reader.next(1000)) for (const t of decodeTxns(m.body)) history = t.history ?? history;
    return history;
  } finally {
    await reader.close();
  }
}
