/**
 * `pgferry demo`: replication live with one command after setup. Starts a
 * throwaway source and two replicas (private PostgreSQL clusters), its own
 * Temporal dev server, pgferry itself and a gentle write workload, and prints
 * where to watch. On Ctrl-C (or after --duration) it stops writing, waits for
 * both replicas to catch up, checks them against the source with the same
 * code as `pgferry verify`, and removes everything it created.
 *
 * It reads no PGFERRY_* variables and no config file of the user's: a demo
 * must never touch a real database. Only RabbitMQ is shared (the machine's,
 * or PGFERRY_RABBITMQ_URL), under a stream name of its own.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { DEFAULTS, loadConfig } from '../config';
import { logger } from '../logger';
import { connectRabbit } from '../changelog/rabbit';
import { portOr, freePort } from '../net';
import { streamName } from '../names';
import { loadSql } from '../sql';
import { DevServer, startDevServer } from '../temporal/dev-server';
import { verifyReplica } from '../verify/command';
import { up } from './up';
import { PgCluster } from '../demo/pg-cluster';
import { startWorkload } from '../demo/workload';

export interface DemoOptions {
  /** Stop by itself after this many seconds (for scripts); default: run until Ctrl-C. */
  durationSeconds?: number;
  perSecond: number;
  say: (line: string) => void;
}

const REPLICAS = ['a', 'b'];
const TABLES = ['public.customers', 'public.orders'];

export async function runDemo(o: DemoOptions): Promise<boolean> {
  const say = o.say;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgferry-demo-'));
  const source = `demo_${randomBytes(3).toString('hex')}`;
  const rabbitmqUrl = process.env.PGFERRY_RABBITMQ_URL || DEFAULTS.rabbitmqUrl;
  const clusters: PgCluster[] = [];
  let dev: DevServer | null = null;
  say(`pgferry demo: a throwaway source and two replicas with a gentle write workload (files in ${dir})`);
  try {
    say('  starting 3 private PostgreSQL clusters (source with wal_level=logical, replicas a and b)…');
    clusters.push(...(await Promise.all([PgCluster.start(), PgCluster.start(), PgCluster.start()])));
    const [src, ...reps] = clusters;
    const schema = loadSql('demo/schema.sql');
    const sourceUrl = await src.createDatabase('shop');
    await src.withClient('shop', (c) => c.query(schema));
    const replicaUrls = await Promise.all(
      reps.map(async (r) => {
        const url = await r.createDatabase('shop');
        await r.withClient('shop', (c) => c.query(schema));
        return url;
      }),
    );

    const [temporalPort, uiPort, metricsPort] = [await freePort(), await portOr(8233), await portOr(DEFAULTS.metricsPort)];
    say(`  starting a Temporal dev server on 127.0.0.1:${temporalPort} (Web UI on port ${uiPort})…`);
    dev = await startDevServer({ dataDir: dir, port: temporalPort, uiPort, log: logger });

    const configFile = path.join(dir, 'pgferry.yaml');
    fs.writeFileSync(
      configFile,
      [
        '# Written by pgferry demo; removed when the demo stops.',
        `rabbitmq_url: ${rabbitmqUrl}`,
        `data_dir: ${dir}`,
        'temporal:',
        `  address: 127.0.0.1:${temporalPort}`,
        'sources:',
        `  - name: ${source}`,
        `    url: ${sourceUrl}`,
        'replicas:',
        ...REPLICAS.map((name, i) => `  - { name: ${name}, url: "${replicaUrls[i]}" }`),
        'metrics:',
        `  port: ${metricsPort}`,
        '',
      ].join('\n'),
    );
    const config = loadConfig({ config: configFile }, {});

    let stop!: (reason: string) => void;
    const until = new Promise<string>((resolve) => (stop = resolve));
    let workload: Awaited<ReturnType<typeof startWorkload>> | null = null;
    let verdict = true;
    const finish = async (reason: string) => {
      if (!workload) return stop(reason);
      say(`\n${reason}: stopping the workload; waiting for both replicas to catch up…`);
      const { txns } = await workload.stop();
      workload = null;
      verdict = await checkReplicas(config, txns, say);
      stop(reason);
    };
    process.once('SIGINT', () => void finish('Ctrl-C'));
    process.once('SIGTERM', () => void finish('SIGTERM'));

    await up(config, {
      say,
      queues: ['capture', 'apply'],
      temporalPort,
      uiPort,
      until,
      onRunning: () => {
        void startWorkload(sourceUrl, o.perSecond).then((w) => {
          workload = w;
          const cfg = `--config ${configFile}`;
          say('');
          say(`pgferry demo is running: source '${source}' → replicas a, b; about ${o.perSecond} transactions/s on the source.`);
          say('Watch it:');
          say(`  npx pgferry ${cfg} status --watch`);
          say(`  Temporal Web UI: ${dev!.uiUrl}/namespaces/default/workflows`);
          say(`  Prometheus metrics: http://127.0.0.1:${metricsPort}/metrics`);
          say(`  psql ${sourceUrl} -c 'SELECT status, count(*) FROM orders GROUP BY 1'   (replica a: psql ${replicaUrls[0]})`);
          say('Try:');
          say(`  npx pgferry ${cfg} replica pause b      then   npx pgferry ${cfg} replica resume b`);
          say(`  npx pgferry ${cfg} verify a`);
          say(o.durationSeconds ? `The demo stops by itself after ${o.durationSeconds} s.` : 'Ctrl-C stops the demo and removes everything it created.');
          if (o.durationSeconds) setTimeout(() => void finish(`${o.durationSeconds} s passed`), o.durationSeconds * 1000);
        }, (err) => stop(`the workload could not start (${(err as Error).message})`));
      },
    });
    return verdict;
  } finally {
    say('removing the demo: Temporal dev server, PostgreSQL clusters, change stream, files…');
    await dev?.stop().catch(() => undefined);
    for (const c of clusters) c.destroy();
    await deleteDemoStream(rabbitmqUrl, source);
    fs.rmSync(dir, { recursive: true, force: true });
    say('demo removed.');
  }
}

/** Wait (bounded) until both replicas hold what the source holds, then say so with row counts; false if one does not. */
async function checkReplicas(config: ReturnType<typeof loadConfig>, txns: number, say: (line: string) => void): Promise<boolean> {
  let ok = true;
  for (const name of REPLICAS) {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const verdicts = await verifyReplica(config, name, TABLES);
      const differs = verdicts.filter((v) => v.missing.length || v.extra.length || v.changed.length || v.sourceRows !== v.replicaRows);
      if (!differs.length) {
        say(`replica ${name}: equal to the source (${verdicts.map((v) => `${v.table} ${v.replicaRows} rows`).join(', ')}) after ${txns} demo transactions`);
        break;
      }
      if (Date.now() > deadline) {
        say(`replica ${name}: still differs from the source after 60 s: ${differs.map((v) => v.table).join(', ')} — see pgferry status`);
        ok = false;
        break;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  return ok;
}

async function deleteDemoStream(url: string, source: string): Promise<void> {
  try {
    const conn = await connectRabbit(url);
    try {
      const ch = await conn.createChannel();
      await ch.deleteQueue(streamName(source));
    } finally {
      await conn.close().catch(() => undefined);
    }
  } catch (err) {
    logger.warn({ stream: streamName(source) }, `could not delete the demo's change stream: ${(err as Error).message}`);
  }
}
