/**
 * A private PostgreSQL cluster (for tests and pgferry demo): initdb into a temp dir,
 * started with pg_ctl on a free port, wal_level=logical by default. The tests
 * may restart, kill and reconfigure it freely. PostgreSQL refuses to run as
 * root, so as root the binaries run as the 'postgres' user.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pg from 'pg';
import { freePort } from '../net';

export const PG_BIN = process.env.PGFERRY_PG_BIN ?? '/usr/lib/postgresql/15/bin';

const asRoot = process.getuid?.() === 0;

function run(bin: string, args: string[], opts: { quiet?: boolean } = {}): string {
  const cmd = path.join(PG_BIN, bin);
  const [file, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  return execFileSync(file, argv, { encoding: 'utf8', stdio: opts.quiet ? ['ignore', 'pipe', 'pipe'] : undefined });
}

export class PgCluster {
  private constructor(
    readonly dir: string,
    readonly port: number,
  ) {}

  static async start(settings: Record<string, string> = {}): Promise<PgCluster> {
    if (!fs.existsSync(path.join(PG_BIN, 'initdb'))) {
      throw new Error(`PostgreSQL 15 server binaries not found in ${PG_BIN}; run npm run setup (it installs postgresql-15), or set PGFERRY_PG_BIN`);
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgferry-pg-'));
    if (asRoot) execFileSync('chown', ['postgres:postgres', dir]);
    const port = await freePort();
    run('initdb', ['-D', dir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync', '--locale', 'C'], { quiet: true });
    const conf = {
      port: String(port),
      listen_addresses: "'127.0.0.1'",
      unix_socket_directories: `'${dir}'`,
      wal_level: 'logical',
      max_wal_senders: '10',
      max_replication_slots: '10',
      fsync: 'off',
      synchronous_commit: 'off',
      full_page_writes: 'off',
      shared_buffers: '64MB',
      ...settings,
    };
    fs.appendFileSync(path.join(dir, 'postgresql.conf'), Object.entries(conf).map(([k, v]) => `${k} = ${v}\n`).join(''));
    const c = new PgCluster(dir, port);
    c.start();
    return c;
  }

  start(): void {
    run('pg_ctl', ['-D', this.dir, '-l', path.join(this.dir, 'server.log'), '-w', '-t', '60', 'start'], { quiet: true });
  }

  stop(mode: 'fast' | 'immediate' = 'fast'): void {
    try {
      run('pg_ctl', ['-D', this.dir, '-m', mode, '-w', 'stop'], { quiet: true });
    } catch {
      /* already stopped */
    }
  }

  url(db = 'postgres', user = 'postgres'): string {
    return `postgres://${user}@127.0.0.1:${this.port}/${db}`;
  }

  async createDatabase(name: string): Promise<string> {
    await this.withClient('postgres', (c) => c.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`));
    return this.url(name);
  }

  async withClient<T>(db: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const c = new pg.Client({ connectionString: this.url(db) });
    // A server stopped under a query: node-postgres fails the query and also emits 'error', which
    // with no listener would end the process; the failed query already reports it.
    c.on('error', () => undefined);
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  }

  destroy(): void {
    this.stop('immediate');
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
