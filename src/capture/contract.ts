/**
 * What every capture mode promises (see mode.ts): the progress a running
 * capture reports, the options it runs with, and what preparing a source
 * yields. Kept apart from the modes so neither depends on the other.
 */
import type { Logger } from '../logger';
import type { RunLimits } from '../changelog/runs';
import type { Retention } from '../changelog/stream';
import type { TableRef } from '../tables';

export interface PreparedSource {
  tables: TableRef[];
  /** Tables on which the source refuses UPDATE/DELETE while published, with the fix. */
  warnings: string[];
  slotCreated: boolean;
  /** Where a slot created now starts (its consistent point). */
  slotLsn?: string;
  publicationCreated: boolean;
}

export interface CaptureProgress {
  /** Slot position acknowledged: end LSN of the last fully confirmed transaction (heartbeats included), or a later keepalive position when nothing was in flight. */
  confirmedLsn: string;
  /** Commit LSN and time of the last confirmed transaction that was published (not a heartbeat). */
  lastLsn?: string;
  lastCommitTime?: string;
  txns: number;
  changes: number;
  messages: number;
  startedAt: string;
  /** Trigger mode: events waiting in the source's change log, and its size on disk. */
  logEvents?: number;
  logBytes?: number;
}

export interface CaptureOptions {
  source: string;
  url: string;
  rabbitUrl: string;
  chunkChanges: number;
  /** A chunk also ends once its values add up to about this many bytes (default: the envelope's CHUNK_BYTES). */
  chunkBytes?: number;
  /** The largest single change one message may carry (default: the envelope's MAX_MESSAGE_BYTES). */
  maxMessageBytes?: number;
  /** Bounds of a run of whole transactions in one message (default: changelog/runs.ts DEFAULT_RUN_LIMITS). */
  runs?: RunLimits;
  /** WAL mode: a transaction's inserts travel as COPY lines from this change on; 0: never (default: the assembler's LINES_AFTER). */
  copyLinesAfter?: number;
  retention: Retention;
  signal: AbortSignal;
  onProgress: (p: CaptureProgress) => void;
  /** Return normally after this long (lets the workflow continue-as-new); 0 = never. */
  maxRunMs: number;
  /** WAL mode: write a heartbeat on an idle source this often, so the slot keeps moving (default 60 s). */
  heartbeatMs?: number;
  log: Logger;
}

/**
 * A consistent snapshot of the source whose position in the change log is
 * known: every transaction that committed at or before `position` is in the
 * snapshot, every later one is not — so a copy taken with it, followed by
 * the stream's transactions above `position`, is the source exactly once.
 * The snapshot lives as long as its connection stays open and idle.
 */
export interface ExportedSnapshot {
  /** The slot's consistent point (WAL mode), or <tick>/FFFFFFFF (trigger mode). */
  position: string;
  /** For SET TRANSACTION SNAPSHOT in the copying sessions. */
  name: string;
  close(): Promise<void>;
}

/** A position in the source's log and the snapshot it stands for (verify: "everything up to here is on the replica"). */
export interface SourcePoint {
  /** pg_current_snapshot() as text. */
  snap: string;
  /** The change-log position a consumer holding everything in `snap` has reached. */
  lsn: string;
}
