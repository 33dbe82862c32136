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
import { ConfigError } from '../errors';
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
  /** Whether capture has published (and RabbitMQ confirmed) every transaction the point's snapshot shows (verify). */
  capturedThrough(c: pg.ClientBase, source: string, point: SourcePoint): Promise<boolean>;
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
  /** What this mode has installed on the source for `source`, in words ("publication pgferry_x"), or null: nothing. */
  installed(c: pg.ClientBase, source: string): Promise<string | null>;
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

/** How a user chooses a mode, for messages. */
function chooseMode(name: CaptureModeName): string {
  return `--mode ${name} (or sources[].mode: ${name} in the config, or PGFERRY_CAPTURE_MODE=${name})`;
}

/**
 * A source captured by one mode must not be prepared or snapshotted by the
 * other: WAL capture run against a trigger-captured source (a forgotten
 * --mode trigger) would create a slot, publish a gap marker into the stream
 * and stop every replica in needs_resync, and a snapshot would be taken at a
 * WAL position that means nothing among trigger positions. Refused when the
 * other mode has something installed for this source and the configured one
 * has nothing; nothing is changed.
 */
export async function refuseOtherMode(c: pg.ClientBase, source: string, mode: CaptureMode): Promise<void> {
  if (await mode.installed(c, source)) return;
  for (const other of ALL_CAPTURE_MODES) {
    if (other === mode) continue;
    const found = await other.installed(c, source);
    if (!found) continue;
    throw new ConfigError(
      `source '${source}' is captured in ${other.name} mode (${found}), but this command was given ${mode.name} mode${mode.name === 'wal' ? ' (the default)' : ''}; nothing was changed. ` +
        `Pass ${chooseMode(other.name)}. To move the source to ${mode.name} capture instead: pgferry uninstall for the source, then pgferry init ${mode.name === 'wal' ? '' : '--mode trigger '}and pgferry replica resync <name> for each replica`,
    );
  }
}
