/** Trigger capture as a capture mode (see ../mode.ts): row triggers write a change log that capture reads tick by tick. */
import type pg from 'pg';
import { SourceError } from '../../errors';
import { withClient } from '../../pg';
import type { CaptureMode } from '../mode';
import type { PreparedSource } from '../contract';
import { triggerHistory } from '../history';
import { describeTables } from '../tables';
import { captureTriggers } from './capture';
import { capturedTables, prepareTriggerSource } from './install';
import { exportTriggerSnapshot, triggerCapturedThrough, triggerPoint } from './snapshot';
import { uninstallTriggers } from './uninstall';

/** Whether trigger capture's schema is installed on the source (pgferry.capture_state exists). */
async function hasCaptureState(c: pg.ClientBase): Promise<boolean> {
  const yes = (await c.query(`SELECT to_regclass('pgferry.capture_state') IS NOT NULL AS yes`)).rows[0].yes;
  return yes === true || yes === 't';
}

export const triggerMode: CaptureMode = {
  name: 'trigger',
  prepare: prepareTriggerSource,
  run: captureTriggers,
  exportSnapshot: exportTriggerSnapshot,
  currentPoint: triggerPoint,
  capturedThrough: triggerCapturedThrough,
  async capturedTables(c: pg.ClientBase, source: string) {
    // The "publication" is the set of tables with pgferry's capture trigger.
    if (!(await hasCaptureState(c))) {
      throw new SourceError(`source '${source}': trigger capture is not installed (no schema pgferry); run pgferry init --mode trigger first`);
    }
    return describeTables(c, source, await capturedTables(c));
  },
  notCaptured: () => 'no capture trigger',
  async installed(c: pg.ClientBase, source: string) {
    if (!(await hasCaptureState(c))) return null;
    const row = (await c.query('SELECT 1 FROM pgferry.capture_state WHERE source = $1', [source])).rows.length > 0;
    return row ? `its position in pgferry.capture_state, and capture triggers` : null;
  },
  history: (url, source) =>
    withClient(`source '${source}'`, url, async (c) => {
      const r = (await c.query('SELECT incarnation FROM pgferry.capture_state WHERE source = $1', [source])).rows[0];
      return triggerHistory(r.incarnation);
    }),
  uninstall: uninstallTriggers,
  slotHealth: null,
  describePrepared: (source: string, p: PreparedSource) =>
    `source '${source}': ${p.tables.length} table(s) captured by triggers` +
    `${p.publicationCreated ? ' (schema pgferry installed)' : ''}${p.slotCreated ? ', capture starts now' : ''}`,
  describeLoss: (source, at) => `the trigger capture state of source '${source}' was lost (schema pgferry removed?) and installed anew at ${at}`,
};
