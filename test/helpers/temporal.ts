import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DevServer, startDevServer } from '../../src/temporal/dev-server';
import { logger } from '../../src/logger';
import { freePort } from './ports';

/**
 * A private Temporal dev server (with its Web UI) for one test file. The dev
 * server picks its HTTP API and metrics ports at random, and one of them can
 * land on the UI port chosen here before the UI binds it (seen once in CI:
 * "failed listening for HTTP API"): then start again on fresh ports.
 */
export async function startTemporal(): Promise<DevServer & { dataDir: string; uiPort: number }> {
  for (let attempt = 1; ; attempt++) {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgferry-temporal-'));
    const port = await freePort();
    const uiPort = await freePort();
    try {
      const server = await startDevServer({ dataDir, port, uiPort, log: logger.child({ test: true }), timeoutMs: 90_000 });
      return Object.assign(server, { dataDir, uiPort });
    } catch (err) {
      if (attempt >= 3 || !/exited/.test((err as Error).message)) throw err;
    }
  }
}
