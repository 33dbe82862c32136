import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DevServer, startDevServer } from '../../src/temporal/dev-server';
import { logger } from '../../src/logger';
import { freePort } from './ports';

/** A private Temporal dev server (with its Web UI) for one test file. */
export async function startTemporal(): Promise<DevServer & { dataDir: string; uiPort: number }> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgferry-temporal-'));
  const port = await freePort();
  const uiPort = await freePort();
  const server = await startDevServer({ dataDir, port, uiPort, log: logger.child({ test: true }), timeoutMs: 90_000 });
  return Object.assign(server, { dataDir, uiPort });
}
