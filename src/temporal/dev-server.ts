/**
 * The Temporal CLI dev server (`temporal server start-dev`), used when no
 * TEMPORAL_ADDRESS is given. Its state lives in a SQLite file under the data
 * directory, so restarting pgferry resumes every workflow where it was.
 */
import { spawn, ChildProcess, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Connection } from '@temporalio/client';
import { ConfigError, UnavailableError } from '../errors';
import type { Logger } from '../logger';
import { devServerSearchAttributeFlags } from './search-attributes';

export const TEMPORAL_CLI_VERSION = 'v1.5.1';

export function temporalCacheBin(): string {
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(cache, 'pgferry', 'bin', 'temporal');
}

/** PGFERRY_TEMPORAL_BIN, then `temporal` on PATH, then the copy setup built into the per-user cache. */
export function findTemporalBinary(): string | null {
  const explicit = process.env.PGFERRY_TEMPORAL_BIN;
  if (explicit) return fs.existsSync(explicit) ? explicit : null;
  try {
    const onPath = execFileSync('sh', ['-c', 'command -v temporal'], { encoding: 'utf8' }).trim();
    if (onPath) return onPath;
  } catch {
    /* not on PATH */
  }
  const cached = temporalCacheBin();
  return fs.existsSync(cached) ? cached : null;
}

export interface DevServer {
  address: string;
  uiUrl: string | null;
  process: ChildProcess;
  stop(): Promise<void>;
}

export async function isTemporalUp(address: string): Promise<boolean> {
  try {
    const conn = await Connection.connect({ address, connectTimeout: 1500 });
    try {
      await conn.workflowService.getSystemInfo({});
      return true;
    } finally {
      await conn.close();
    }
  } catch {
    return false;
  }
}

/**
 * The Temporal CLI dev server of this machine that serves `port`, if any:
 * its pid and database file, read from its command line (Linux /proc).
 * null when none is found (another kind of server, or no /proc).
 */
export function devServerOnPort(port: number): { pid: number; dbFile: string | null } | null {
  let pids: string[];
  try {
    pids = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return null;
  }
  for (const pid of pids) {
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    const at = (flag: string) => {
      const i = argv.indexOf(flag);
      return i >= 0 ? argv[i + 1] : undefined;
    };
    if (!argv.includes('start-dev') || at('--port') !== String(port)) continue;
    const db = at('--db-filename') ?? null;
    let cwd = '/';
    try {
      cwd = fs.readlinkSync(`/proc/${pid}/cwd`); // a relative --db-filename is the server's, not ours
    } catch {
      /* not ours to read */
    }
    return { pid: Number(pid), dbFile: db ? realFile(path.resolve(cwd, db)) : null };
  }
  return null;
}

/** A file's path with its directory's links resolved (as given when that cannot be read). */
export function realFile(file: string): string {
  try {
    return path.join(fs.realpathSync.native(path.dirname(path.resolve(file))), path.basename(file));
  } catch {
    return path.resolve(file);
  }
}

export async function startDevServer(opts: {
  dataDir: string;
  port: number;
  uiPort: number | null;
  log: Logger;
  timeoutMs?: number;
  /** Register pgferry's search attributes (default true). They are registered when the database file is created only; pgferry up adds them to an older one. */
  searchAttributes?: boolean;
}): Promise<DevServer> {
  const bin = findTemporalBinary();
  if (!bin) {
    throw new ConfigError(
      `Temporal: no 'temporal' CLI found (looked at PGFERRY_TEMPORAL_BIN, PATH and ${temporalCacheBin()}); run npm run setup to build it, or set TEMPORAL_ADDRESS to use your own Temporal server`,
    );
  }
  fs.mkdirSync(opts.dataDir, { recursive: true });
  const address = `127.0.0.1:${opts.port}`;
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(opts.port), '--db-filename', path.join(opts.dataDir, 'temporal.db'), '--log-level', 'error'];
  if (opts.searchAttributes !== false) args.push(...devServerSearchAttributeFlags());
  if (opts.uiPort) args.push('--ui-port', String(opts.uiPort));
  else args.push('--headless');
  const logFile = fs.openSync(path.join(opts.dataDir, 'temporal.log'), 'a');
  const child = spawn(bin, args, { stdio: ['ignore', logFile, logFile], detached: false });
  fs.closeSync(logFile);
  let exited: string | null = null;
  child.on('exit', (code, signal) => (exited = `exited with ${signal ?? code}`));
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  while (!(await isTemporalUp(address))) {
    if (exited) {
      throw new UnavailableError(`Temporal dev server ${exited}; see ${path.join(opts.dataDir, 'temporal.log')} (is port ${opts.port} or ${opts.uiPort} taken?)`);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new UnavailableError(`Temporal dev server did not answer on ${address} within ${(opts.timeoutMs ?? 60_000) / 1000}s; see ${path.join(opts.dataDir, 'temporal.log')}`);
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  opts.log.info({ address }, 'Temporal dev server started');
  return {
    address,
    uiUrl: opts.uiPort ? `http://127.0.0.1:${opts.uiPort}` : null,
    process: child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await done;
      clearTimeout(t);
    },
  };
}
