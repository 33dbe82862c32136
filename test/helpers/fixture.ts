import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pg from 'pg';
import * as amqp from 'amqplib';
import { PgCluster } from './pg-cluster';
import { startTemporal } from './temporal';
import { runCli, startCli, Proc } from './procs';
import { waitFor } from './wait';
import { streamName } from '../../src/names';

/**
 * An end-to-end world: a source cluster, one cluster holding the replica
 * databases, a private Temporal dev server, the machine's RabbitMQ, and a
 * source name unique to the test file (so streams never collide).
 */
export const RABBIT_URL = process.env.PGFERRY_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

export interface World {
  source: PgCluster;
  replicas: PgCluster;
  temporal: Awaited<ReturnType<typeof startTemporal>>;
  sourceName: string;
  sourceUrl: string;
  replicaUrls: Record<string, string>;
  env: NodeJS.ProcessEnv;
  dataDir: string;
  teardown(): Promise<void>;
}

export async function createWorld(opts: {
  replicas: string[];
  schema: string;
  sourceSettings?: Record<string, string>;
  replicaSettings?: Record<string, string>;
}): Promise<World> {
  const [source, replicas, temporal] = await Promise.all([PgCluster.start(opts.sourceSettings), PgCluster.start(opts.replicaSettings), startTemporal()]);
  const sourceName = `t${Math.random().toString(36).slice(2, 10)}`;
  const sourceUrl = await source.createDatabase('app');
  await source.withClient('app', (c) => c.query(opts.schema));
  const replicaUrls: Record<string, string> = {};
  for (const name of opts.replicas) {
    replicaUrls[name] = await replicas.createDatabase(`replica_${name}`);
    await replicas.withClient(`replica_${name}`, (c) => c.query(opts.schema));
  }
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgferry-data-'));
  const env: NodeJS.ProcessEnv = {
    TEMPORAL_ADDRESS: temporal.address,
    PGFERRY_DATA_DIR: dataDir,
    PGFERRY_RABBITMQ_URL: RABBIT_URL,
    PGFERRY_SOURCE_NAME: sourceName,
    PGFERRY_LOG_LEVEL: 'info',
    // Several pgferry processes run at once in tests: no metrics endpoint unless a test asks for one.
    PGFERRY_METRICS_PORT: '0',
  };
  return {
    source,
    replicas,
    temporal,
    sourceName,
    sourceUrl,
    replicaUrls,
    env,
    dataDir,
    async teardown() {
      await temporal.stop().catch(() => undefined);
      source.destroy();
      replicas.destroy();
      await deleteStream(sourceName);
      fs.rmSync(dataDir, { recursive: true, force: true });
      fs.rmSync(temporal.dataDir, { recursive: true, force: true });
    },
  };
}

export async function deleteStream(sourceName: string): Promise<void> {
  const conn = await amqp.connect(RABBIT_URL, { noDelay: true });
  try {
    const ch = await conn.createChannel();
    await ch.deleteQueue(streamName(sourceName));
  } finally {
    await conn.close();
  }
}

export function upArgs(w: World, extra: string[] = []): string[] {
  return ['up', '--source', w.sourceUrl, ...Object.entries(w.replicaUrls).flatMap(([n, u]) => ['--replica', `${n}=${u}`]), ...extra];
}

/** Start `pgferry up` (or `worker`) and wait until it says it is running. */
export async function startUp(w: World, args = upArgs(w), env: NodeJS.ProcessEnv = {}): Promise<Proc> {
  const p = startCli(args, { ...w.env, ...env });
  await waitFor(
    `pgferry ${args[0]} to report it is running`,
    async () => {
      if (p.child.exitCode !== null) throw new Error(`exited with ${p.child.exitCode}:\n${p.output()}`);
      return /pgferry (is running|worker running)/.test(p.output());
    },
    120_000,
  );
  return p;
}

export class StopWaiting extends Error {}

export function cli(w: World, args: string[]) {
  return runCli(args, w.env);
}

/** Every row of every table, as PostgreSQL prints it (`row::text`), sorted: the content oracle. */
export async function snapshot(c: pg.Client, tables: string[]): Promise<Record<string, string[]>> {
  // The same rendering on both sides, whatever each server's defaults (the fidelity test gives them different ones).
  await c.query(`SET TimeZone = UTC; SET DateStyle = ISO, YMD; SET IntervalStyle = postgres; SET extra_float_digits = 3; SET bytea_output = hex`);
  const out: Record<string, string[]> = {};
  for (const t of tables) {
    const { rows } = await c.query(`SELECT t::text AS r FROM ${t} t ORDER BY 1`);
    out[t] = rows.map((r) => r.r);
  }
  return out;
}

export async function contentOf(cluster: PgCluster, db: string, tables: string[]) {
  return cluster.withClient(db, (c) => snapshot(c, tables));
}

/**
 * Wait until a replica database holds exactly the source's rows. Fails at
 * once, with the reason, if the replica stops in state `failed`.
 */
export async function waitForEqual(w: World, replica: string, tables: string[], timeoutMs = 120_000): Promise<void> {
  let diff = '';
  let lastStatusCheck = Date.now();
  try {
    await waitFor(
      `replica '${replica}' to equal the source`,
      async () => {
        if (Date.now() - lastStatusCheck > 5000) {
          lastStatusCheck = Date.now();
          const r = await cli(w, ['replica', 'status', replica, '--json']);
          const v = r.code === 1 && r.stdout ? JSON.parse(r.stdout) : null;
          if (v?.state === 'failed') throw new StopWaiting(`replica '${replica}' failed: ${v.lastError}`);
        }
        const [src, dst] = await Promise.all([contentOf(w.source, 'app', tables), contentOf(w.replicas, `replica_${replica}`, tables)]);
        const same = JSON.stringify(src) === JSON.stringify(dst);
        if (!same) {
          diff = tables
            .map((t) => `${t}: source ${src[t].length} rows, replica ${dst[t].length} rows`)
            .join('; ');
        }
        return same;
      },
      timeoutMs,
      500,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${diff}`);
  }
}

export async function progressOf(w: World, replica: string): Promise<{ lsn: string; stream_offset: string | null; txns_applied: string }> {
  return w.replicas.withClient(`replica_${replica}`, async (c) => (await c.query('SELECT lsn::text, stream_offset::text, txns_applied::text FROM pgferry.progress')).rows[0]);
}

/**
 * Row count and an order-independent hash of every row's text: the content
 * oracle for tables too big to compare row by row. Rendered the same way on
 * both sides.
 */
export async function fingerprint(cluster: PgCluster, db: string, table: string): Promise<{ rows: string; hash: string }> {
  return cluster.withClient(db, async (c) => {
    await c.query(`SET TimeZone = UTC; SET DateStyle = ISO, YMD; SET IntervalStyle = postgres; SET extra_float_digits = 3; SET bytea_output = hex`);
    const { rows } = await c.query(`SELECT count(*)::text AS rows, coalesce(sum(hashtextextended(t::text, 0)), 0)::text AS hash FROM ${table} t`);
    return rows[0];
  });
}
