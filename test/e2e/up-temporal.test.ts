import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevServer, DevServer } from '../../src/temporal/dev-server';
import { logger } from '../../src/logger';
import { freePort } from '../helpers/ports';
import { runCli } from '../helpers/procs';

/**
 * Defect J: `pgferry up` without TEMPORAL_ADDRESS used whatever Temporal
 * server answered on the dev server's port, even one an earlier `up` left
 * running for another data directory (whose workflows then ran this setup's
 * replicas, or the other way round). It now says which server it uses and
 * refuses one that serves another pgferry data directory.
 */
describe('pgferry up and a dev server already running', () => {
  let dev: DevServer;
  let port: number;
  const other = fs.mkdtempSync(path.join(os.tmpdir(), 'pgferry-other-'));
  const mine = fs.mkdtempSync(path.join(os.tmpdir(), 'pgferry-mine-'));

  beforeAll(async () => {
    port = await freePort();
    dev = await startDevServer({ dataDir: other, port, uiPort: null, log: logger.child({ test: true }) });
  });
  afterAll(async () => {
    await dev?.stop();
    fs.rmSync(other, { recursive: true, force: true });
    fs.rmSync(mine, { recursive: true, force: true });
  });

  const env = (dataDir: string) => ({ PGFERRY_DATA_DIR: dataDir, TEMPORAL_ADDRESS: '', PGFERRY_METRICS_PORT: '0', PGFERRY_CONNECT_WAIT_SECONDS: '1' });
  // The source is never reached: Temporal is settled first.
  const args = ['up', '--source', 'postgres://nobody@127.0.0.1:1/none', '--replica', 'a=postgres://nobody@127.0.0.1:1/none', '--temporal-port', '0'];

  it('refuses the dev server of another data directory, naming it and the ways out', async () => {
    const r = await runCli(args.map((a) => (a === '0' ? String(port) : a)), env(mine), 60_000);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`serves another pgferry data directory (${path.join(fs.realpathSync(other), 'temporal.db')})`);
    expect(r.stderr).toMatch(/--temporal-port.*TEMPORAL_ADDRESS=127\.0\.0\.1:\d+ to use it on purpose/);
  });

  it('uses the dev server of its own data directory, and says so', async () => {
    const r = await runCli(args.map((a) => (a === '0' ? String(port) : a)), env(other), 60_000);
    expect(r.stdout + r.stderr).toMatch(/Temporal: using the server already running at 127\.0\.0\.1:\d+ \(the dev server started earlier for this data directory, pid \d+\)/);
  });
});
