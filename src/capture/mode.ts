/**
 * Capture modes behind one interface. A source is captured either by logical
 * decoding (`wal`: a publication, a replication slot, pgoutput) or by row
 * triggers writing a change log (`trigger`: for sources without
 * wal_level=logical). Everything that differs between the two is a member of
 * `CaptureMode`, so a mode that lacks a capability fails to compile instead of
 * silently skipping a check; `captureMode(config)` is the only reader of the
 * configured mode.
 */
import type pg from 'pg';
import type { Config } from '../config';
import type { TableRef } from '../tables';
import type { CaptureOptions, CaptureProgress, ExportedSnapshot, PreparedSource, SourcePoint } from './contract';
import type { TableSelection } from './tables';
import type { SlotHealth } from './wal/slot-health';
import { walMode } from './wal';
import { triggerMode } from './trigger';

export type CaptureModeName = 'wal' | 'trigger';

export interface CaptureMode {
  readonly name: CaptureModeName;
  /** Install or check what capture needs on the source (idempotent). */
  prepare(url: string, source: string, selection: TableSelection): Promise<PreparedSource>;
  /** Capture until the signal, `maxRunMs`, or a failure, publishing every transaction to the stream. */
  run(opts: CaptureOptions): Promise<CaptureProgress>;
  /** A consistent snapshot whose position in the change log is known (replica add, resync). */
  exportSnapshot(url: string, source: string): Promise<ExportedSnapshot>;
  /** The source's snapshot now and the log position that covers it (verify). */
  currentPoint(c: pg.ClientBase): Promise<SourcePoint>;
  /** The tables captured now, with their columns; a source not set up for this mode is an error naming the fix. */
  capturedTables(c: pg.ClientBase, source: string): Promise<TableRef[]>;
  /** Why a table the user named is not captured, e.g. "not in publication pgferry_main". */
  notCaptured(source: string): string;
  /** The history the source's positions belong to now (capture/history.ts). */
  history(url: string, source: string): Promise<string>;
  /** Remove what `prepare` installed; says what it removed. */
  uninstall(c: pg.ClientBase, source: string): Promise<string[]>;
  /** How the replication slot stands (status, metrics), or null: the mode has no slot to hold WAL back. */
  slotHealth: ((url: string, source: string) => Promise<SlotHealth>) | null;
  /** One line for `init`: what was prepared. */
  describePrepared(source: string, prepared: PreparedSource): string;
  /** Why capture state created anew (`prepared.slotCreated` while the stream holds changes) means a gap. */
  describeLoss(source: string, at: string): string;
}

const MODES: Record<CaptureModeName, CaptureMode> = { wal: walMode, trigger: triggerMode };

/** Every mode, for uninstall (a source may hold what either installed). */
export const ALL_CAPTURE_MODES: readonly CaptureMode[] = [walMode, triggerMode];

/** The capture mode the configuration chose for its source. */
export function captureMode(config: Config): CaptureMode {
  return MODES[config.source.mode];
}
