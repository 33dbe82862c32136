/** WAL capture as a capture mode (see ../mode.ts): logical decoding through a publication and a replication slot. */
import type pg from 'pg';
import { SourceError } from '../../errors';
import { publicationName, slotName } from '../../names';
import type { CaptureMode } from '../mode';
import type { PreparedSource } from '../contract';
import { walHistory } from '../history';
import { prepareSource, publishedTables } from './prepare';
import { slotHealth } from './slot-health';
import { exportWalSnapshot, walCapturedThrough, walPoint } from './snapshot';
import { streamChanges } from './stream-changes';
import { uninstallWal } from './uninstall';

export const walMode: CaptureMode = {
  name: 'wal',
  prepare: prepareSource,
  run: streamChanges,
  exportSnapshot: exportWalSnapshot,
  currentPoint: walPoint,
  capturedThrough: walCapturedThrough,
  async capturedTables(c: pg.ClientBase, source: string) {
    const pub = publicationName(source);
    if (!(await c.query('SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1', [pub])).rows.length) {
      throw new SourceError(`source '${source}': not set up for pgferry (no publication ${pub}); run pgferry init first`);
    }
    return publishedTables(c, source, pub);
  },
  notCaptured: (source) => `not in publication ${publicationName(source)}`,
  async installed(c: pg.ClientBase, source: string) {
    const pub = publicationName(source);
    const slot = slotName(source);
    const r = (
      await c.query<{ pub: boolean | string; slot: boolean | string }>(
        'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1) AS pub, EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $2) AS slot',
        [pub, slot],
      )
    ).rows[0];
    const yes = (v: boolean | string) => v === true || v === 't';
    const found = [yes(r.pub) ? `publication ${pub}` : '', yes(r.slot) ? `replication slot ${slot}` : ''].filter(Boolean);
    return found.length ? found.join(' and ') : null;
  },
  history: (url, source) => walHistory(`source '${source}'`, url),
  uninstall: uninstallWal,
  slotHealth,
  describePrepared: (source: string, p: PreparedSource) =>
    `source '${source}': ${p.tables.length} table(s) published` + `${p.publicationCreated ? ' (publication created)' : ''}${p.slotCreated ? ', replication slot created' : ''}`,
  describeLoss: (source, at) => `the replication slot ${slotName(source)} of source '${source}' was lost and created anew at ${at}`,
};
