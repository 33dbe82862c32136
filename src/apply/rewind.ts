/**
 * `pgferry replica rewind <name> --to <position>`: a replica restored from a
 * backup taken at source position P continues from there. The stream is
 * searched for the last message of a transaction at or below P; the
 * replica's progress row is set to (P, that offset), so its next batch
 * applies every transaction above P. If the stream no longer reaches back to
 * P, nothing is changed.
 */
import type { ChannelModel } from 'amqplib';
import { ConfigError, GapError } from '../errors';
import { decodeTxn, isStreamMarker } from '../changelog/envelope';
import { compareLsn, normalizeLsn } from '../lsn';
import { StreamReader } from '../changelog/stream';
import { ensureTargetSchema } from './target';
import { connectPg } from '../pg';
import { ProgressStore } from './progress-store';

export interface RewindResult {
  lsn: string;
  /** Offset of the last message at or below the position (the replica reads after it). */
  offset: number;
  /** The first transaction the replica will apply, if the stream already holds one. */
  next: string | null;
}

export async function findRewindOffset(rabbit: ChannelModel, source: string, position: string): Promise<{ offset: number; next: string | null; stream: string | null }> {
  const reader = await StreamReader.open(rabbit, source, 'first', 256);
  try {
    let last: number | null = null;
    let stream: string | null = null; // the stream's identity, from its messages
    for (let m = await reader.next(2000); m; m = await reader.next(1000)) {
      stream = m.stream ?? stream;
      const lsn = m.lsn ?? decodeTxn(m.body).lsn;
      if (isStreamMarker(lsn)) continue; // the stream's marker, no transaction: it proves nothing about reaching back to the position
      if (compareLsn(lsn, position) > 0) {
        if (last === null) {
          throw new GapError(
            `the stream of source '${source}' no longer reaches back to ${position}: the oldest transaction it holds is ${lsn} (offset ${m.offset}); ` +
              `nothing was changed. Rebuild the replica with pgferry replica resync instead`,
          );
        }
        return { offset: last, next: lsn, stream };
      }
      last = m.offset;
    }
    if (last === null) throw new GapError(`the stream of source '${source}' is empty: there is nothing to continue from; nothing was changed`);
    return { offset: last, next: null, stream };
  } finally {
    await reader.close();
  }
}

export async function rewindReplica(o: { rabbit: ChannelModel; source: string; replica: string; replicaUrl: string; to: string }): Promise<RewindResult> {
  let lsn: string;
  try {
    lsn = normalizeLsn(o.to);
  } catch {
    throw new ConfigError(`--to '${o.to}' is not a source position; give an LSN such as 16/B374D848 (pg_current_wal_lsn() on the source when the backup was taken)`);
  }
  const found = await findRewindOffset(o.rabbit, o.source, lsn);
  const c = await connectPg(`replica '${o.replica}'`, o.replicaUrl);
  try {
    await ensureTargetSchema(c);
    // Waits for a batch in flight (it holds the row) and takes effect at the next one.
    await ProgressStore.set(c, o.replica, o.source, { lsn, offset: found.offset, stream: found.stream });
  } finally {
    await c.end().catch(() => undefined);
  }
  return { lsn, ...found };
}
