/** WAL capture as a capture mode (see ../mode.ts): logical decoding through a publication and a replication slot. */
import type pg from 'pg';
import { SourceError } from '../../errors';
import { publicationName, slotName } from '../../names';
import type { CaptureMode } from '../mode';
import type { PreparedSource } from '../contract';
import { walHistory } from '../history';
import { prepareSource, publishedTables } from './prepare';
import { slotHealth } from './slot-health';
import { exportWalSnapshot, walPoint } from './snapshot';
import { streamChanges } from './stream-changes';
import { uninstallWal } from './uninstall';

export const walMode: CaptureMode = {
  name: 'wal',
  prepare: prepareSource,
  run: streamChanges,
  exportSnapshot: exportWalSnapshot,
  currentPoint: walPoint,
  async capturedTables(c: pg.ClientBase, source: string) {
    const pub = publicationName(source);
    if (!(await c.query('SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1', [pub])).rows.length) {
      throw new SourceError(`source '${source}': not set up for pgferry (no publication ${pub}); run pgferry init first`);
    }
    return publishedTables(c, source, pub);
  },
  notCaptured: (source) => `not in publication ${publicationName(source)}`,
  history: (url, source) => walHistory(`source '${source}'`, url),
  uninstall: uninstallWal,
  slotHealth,
  describePrepared: (source: string, p: PreparedSource) =>
    `source '${source}': ${p.tables.length} table(s) published` + `${p.publicationCreated ? ' (publication created)' : ''}${p.slotCreated ? ', replication slot created' : ''}`,
  describeLoss: (source, at) => `the replication slot ${slotName(source)} of source '${source}' was lost and created anew at ${at}`,
};
