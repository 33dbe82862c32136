import { Command, Option } from 'commander';
import { Config, loadConfig, RawConfig, replicaUrl, requireSourceUrl } from '../config';
import { withClient } from '../pg';
import { syncSequences } from '../apply/sequences';
import { rewindReplica } from '../apply/rewind';
import { describeCause, PgferryError } from '../errors';
import { connectRabbit } from '../log/rabbit';
import { retainedRange, StreamEnd } from '../log/stream';
import { CliFailure, EXIT, fail, printJson, table } from './output';
import { connectClient, temporalAddress } from '../temporal/connection';
import { captureView, listReplicaNames, replicaView, ReplicaView } from '../temporal/inspect';
import { QueueName, startWorkers } from '../temporal/worker';
import { pauseSignal, replicaStatusQuery, resumeSignal } from '../../workflows/messages';
import { captureWorkflowId, replicaWorkflowId } from '../names';
import { up } from './up';
import { verifyReplica } from '../verify/command';
import type { TableVerdict } from '../verify/verify';
import { addReplica } from '../snapshot/add';
import { resyncReplica } from '../snapshot/resync';
import { snapshotProgressBar } from '../snapshot/progress-bar';
import { initialize } from './init';
import { WorkflowNotFoundError } from '@temporalio/client';

/** The `pgferry` command line. Human output by default, --json for scripts; see EXIT for exit codes. */
const program = new Command('pgferry')
  .description('Durable PostgreSQL replication: capture → RabbitMQ stream → Temporal-driven apply')
  .showHelpAfterError()
  .configureOutput({ outputError: (str, write) => write(str) })
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : EXIT.usage));

function connectionOptions(cmd: Command): Command {
  return cmd
    .option('--source <url>', 'source database URL (env PGFERRY_SOURCE)')
    .option('--source-name <name>', 'name of the source: slot pgferry_<name>, stream pgferry.<name>.changes (env PGFERRY_SOURCE_NAME)', undefined)
    .option('--replica <name=url>', 'a replica, repeatable (env PGFERRY_REPLICAS="a=url,b=url")', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--tables <list>', 'comma-separated schema.table list to replicate (default: all tables; env PGFERRY_TABLES)')
    .option('--rabbitmq <url>', 'RabbitMQ URL (env PGFERRY_RABBITMQ_URL, default amqp://guest:guest@127.0.0.1:5672)')
    .option('--data-dir <dir>', 'where pgferry keeps local state such as the dev server database (env PGFERRY_DATA_DIR, default .pgferry)')
    .option('--wait <seconds>', 'how long to keep retrying servers that do not answer at start-up (default 30)');
}

const queuesOption = new Option('--queues <list>', 'task queues this process serves: capture, apply, or both').default('capture,apply');

function parseQueues(list: string): QueueName[] {
  const qs = list.split(',').map((q) => q.trim()).filter(Boolean);
  const bad = qs.filter((q) => q !== 'capture' && q !== 'apply');
  if (bad.length || !qs.length) throw new CliFailure(`--queues '${list}': use capture, apply or capture,apply`, EXIT.usage);
  return qs as QueueName[];
}

function action<A extends unknown[]>(fn: (...args: A) => Promise<void>, opts: { log?: boolean } = {}) {
  return async (...args: A) => {
    const cmd = args[args.length - 1] as Command;
    const json = Boolean(cmd.opts().json);
    try {
      await fn(...args);
    } catch (err) {
      fail(err, json, opts.log);
    }
  };
}

connectionOptions(program.command('up'))
  .description('run everything: Temporal (dev server unless TEMPORAL_ADDRESS is set), worker, capture and replica workflows')
  .addOption(queuesOption)
  .option('--temporal-port <port>', 'port of the dev server started when TEMPORAL_ADDRESS is unset', '7233')
  .option('--ui-port <port>', 'port of the dev server Web UI', '8233')
  .action(
    action(async (opts: RawConfig & { queues: string; temporalPort: string; uiPort: string }) => {
      const config = loadConfig(opts);
      await up(config, { queues: parseQueues(opts.queues), temporalPort: Number(opts.temporalPort), uiPort: Number(opts.uiPort) });
      process.exit(EXIT.ok); // everything is closed; do not wait on stray timers
    }, { log: true }),
  );

connectionOptions(program.command('init'))
  .description('prepare the source (publication, replication slot) and check every replica, without starting anything; reports what to fix')
  .action(
    action(async (opts: RawConfig) => {
      const config = loadConfig(opts);
      const say = (line: string) => process.stdout.write(`${line}\n`);
      const { replicaErrors } = await initialize(config, say);
      if (replicaErrors.size) {
        say(`${replicaErrors.size} replica(s) not ready: fix what is reported above, then run pgferry init again`);
        process.exit(EXIT.failed);
      }
      say(`ready: run pgferry up to start replicating`);
      process.exit(EXIT.ok);
    }, { log: true }),
  );

connectionOptions(program.command('worker'))
  .description('run only a worker (connects to TEMPORAL_ADDRESS); for deployments with several worker processes')
  .addOption(queuesOption)
  .action(
    action(async (opts: RawConfig & { queues: string }) => {
      const config = loadConfig(opts);
      const workers = await startWorkers(config, temporalAddress(), parseQueues(opts.queues));
      process.stdout.write(`pgferry worker running on ${temporalAddress()} (queues: ${opts.queues})\n`);
      process.once('SIGINT', () => void workers.shutdown());
      process.once('SIGTERM', () => void workers.shutdown());
      await workers.run;
      process.exit(EXIT.ok);
    }, { log: true }),
  );

connectionOptions(program.command('verify <name>'))
  .description('compare a replica with the source by content (row counts, hashes, then the differing keys); exit 1 on a difference')
  .option('--json', 'machine-readable output')
  .action(
    action(async (name: string, opts: RawConfig & { json?: boolean }) => {
      const config = loadConfig(opts);
      const verdicts = await verifyReplica(config, name, config.source.tables);
      // Keys decide, not row counts: on a busy source the counts are read at different instants.
      const differs = (v: TableVerdict) => v.missing.length + v.extra.length + v.changed.length > 0;
      const bad = verdicts.filter(differs);
      if (opts.json) printJson({ replica: name, equal: !bad.length, tables: verdicts });
      else {
        const rows = [['TABLE', 'SOURCE ROWS', 'REPLICA ROWS', 'RESULT']];
        for (const v of verdicts) {
          const parts = [`${v.missing.length} missing`, `${v.extra.length} extra`, `${v.changed.length} changed`].filter((p) => !p.startsWith('0 '));
          const moving = v.moving.length ? ` (${v.moving.length} key(s) changing on the source throughout, not compared)` : '';
          rows.push([v.table, String(v.sourceRows), String(v.replicaRows), (differs(v) ? parts.join(', ') : 'equal') + moving]);
        }
        process.stdout.write(`${table(rows)}\n`);
        const show = (keys: string[]) => keys.slice(0, 20).join(' ') + (keys.length > 20 ? ` … and ${keys.length - 20} more` : '');
        for (const v of bad) {
          if (v.missing.length) process.stdout.write(`${v.table}: missing on the replica: ${show(v.missing)}\n`);
          if (v.extra.length) process.stdout.write(`${v.table}: only on the replica: ${show(v.extra)}\n`);
          if (v.changed.length) process.stdout.write(`${v.table}: different on the replica: ${show(v.changed)}\n`);
        }
        process.stdout.write(bad.length ? `replica '${name}' differs from the source in ${bad.length} table(s)\n` : `replica '${name}' equals the source\n`);
      }
      process.exit(bad.length ? EXIT.failed : EXIT.ok);
    }),
  );

const replica = program.command('replica').description('inspect and control replicas');

function fmtLag(v: ReplicaView): string {
  if (v.lagBytes === null) return '?';
  if (v.lagBytes === 0) return '0';
  return `${v.lagBytes} B${v.lagSeconds !== null ? ` / ${v.lagSeconds.toFixed(1)} s` : ''}`;
}

function printReplicas(views: ReplicaView[]): void {
  const rows = [['REPLICA', 'STATE', 'APPLIED', 'OFFSET', 'LAG', 'TXNS', 'CHANGES', 'ERROR']];
  for (const v of views) {
    const error = v.lastError ?? (v.retrying ? `retrying: ${v.retrying}` : null) ?? (v.captureError ? `capture: ${v.captureError}` : '');
    rows.push([v.replica, v.state, v.appliedLsn, v.offset === null ? '-' : String(v.offset), fmtLag(v), String(v.txns), String(v.changes), error ?? '']);
  }
  process.stdout.write(`${table(rows)}\n`);
}

replica
  .command('list')
  .description('list running replicas')
  .option('--json', 'machine-readable output')
  .action(
    action(async (opts: { json?: boolean }) => {
      const client = await connectClient();
      const names = await listReplicaNames(client);
      if (opts.json) printJson(names.map((name) => ({ name, workflowId: replicaWorkflowId(name) })));
      else process.stdout.write(names.length ? `${names.join('\n')}\n` : 'no replicas are running (start them with pgferry up)\n');
    }),
  );

replica
  .command('status [name]')
  .description('state, applied position, stream offset, lag and counts of one or every replica')
  .option('--json', 'machine-readable output')
  .action(
    action(async (name: string | undefined, opts: { json?: boolean }) => {
      const client = await connectClient();
      const names = name ? [name] : await listReplicaNames(client);
      const views: ReplicaView[] = [];
      for (const n of names) views.push(await replicaView(client, n));
      if (opts.json) printJson(name ? views[0] : views);
      else if (!views.length) process.stdout.write('no replicas are running (start them with pgferry up)\n');
      else printReplicas(views);
      if (views.some((v) => v.state === 'failed' || v.state === 'needs_resync')) process.exitCode = EXIT.failed;
    }),
  );

connectionOptions(replica.command('add <name>'))
  .description('fill a new, empty replica from a snapshot of the source, then leave it where the stream takes over (needs --snapshot)')
  .option('--snapshot', 'copy the current content of the published tables from a consistent snapshot')
  .option('--create-tables', 'first create the published tables the replica lacks, from the source definitions')
  .option('--parallel <n>', 'tables copied at a time', '4')
  .action(
    action(async (name: string, opts: RawConfig & { snapshot?: boolean; createTables?: boolean; parallel: string }) => {
      if (!opts.snapshot) {
        throw new CliFailure(
          `replica add ${name}: pass --snapshot to copy the source's content; a replica that already holds it needs no add: give --replica ${name}=… to pgferry up`,
          EXIT.usage,
        );
      }
      const parallel = Number(opts.parallel);
      if (!Number.isInteger(parallel) || parallel < 1) throw new CliFailure(`--parallel '${opts.parallel}': use a whole number ≥ 1`, EXIT.usage);
      const config = loadConfig(opts);
      const say = (line: string) => process.stdout.write(`${line}\n`);
      const bar = snapshotProgressBar();
      const started = Date.now();
      let result;
      try {
        result = await addReplica(config, name, { createTables: Boolean(opts.createTables), parallel, say, onProgress: (t) => bar.update(t) });
      } finally {
        bar.stop();
      }
      const rows = result.tables.reduce((n, t) => n + t.rows, 0);
      const bytes = result.tables.reduce((n, t) => n + t.bytes, 0);
      const seconds = (Date.now() - started) / 1000;
      say(
        `replica '${name}': copied ${rows} rows (${(bytes / 1e6).toFixed(1)} MB) in ${result.tables.length} table(s) in ${seconds.toFixed(1)} s ` +
          `(${Math.round(rows / seconds)} rows/s), as of source position ${result.position}`,
      );
      say(`next: run pgferry up with --replica ${name}=… (or restart it with it): the replica catches up from the stream, skipping what the snapshot holds`);
      process.exit(EXIT.ok);
    }),
  );

connectionOptions(replica.command('sync-sequences <name>'))
  .description('raise every replica sequence to at least the source value (for cut-over; never lowers one)')
  .option('--json', 'machine-readable output')
  .action(
    action(async (name: string, opts: RawConfig & { json?: boolean }) => {
      const config = loadConfig(opts);
      const synced = await withClient(`source '${config.source.name}'`, requireSourceUrl(config), (src) =>
        withClient(`replica '${name}'`, replicaUrl(config, name), (dst) => syncSequences(src, dst)),
      );
      if (opts.json) printJson({ replica: name, sequences: synced });
      else {
        const rows = [['SEQUENCE', 'SOURCE', 'REPLICA NOW']];
        for (const q of synced) rows.push([q.sequence, q.source ?? '(unused)', q.missing ? 'MISSING on the replica' : (q.replica ?? '-')]);
        process.stdout.write(`${table(rows)}\n`);
        const missing = synced.filter((q) => q.missing).length;
        process.stdout.write(`${synced.length - missing} sequence(s) at or above the source${missing ? `; ${missing} missing on the replica (create them there, then run this again)` : ''}\n`);
      }
      process.exit(synced.some((q) => q.missing) ? EXIT.failed : EXIT.ok);
    }),
  );

connectionOptions(replica.command('resync <name>'))
  .description('rebuild a replica from a fresh snapshot (shadow tables swapped in one transaction), then let it catch up')
  .option('--parallel <n>', 'tables copied at a time', '4')
  .action(
    action(async (name: string, opts: RawConfig & { parallel: string }) => {
      const parallel = Number(opts.parallel);
      if (!Number.isInteger(parallel) || parallel < 1) throw new CliFailure(`--parallel '${opts.parallel}': use a whole number ≥ 1`, EXIT.usage);
      const config = loadConfig(opts);
      const say = (line: string) => process.stdout.write(`${line}\n`);
      const bar = snapshotProgressBar();
      let result;
      try {
        result = await resyncReplica(config, name, { parallel, say, onProgress: (t) => bar.update(t) });
      } finally {
        bar.stop();
      }
      const rows = result.tables.reduce((n, t) => n + t.rows, 0);
      say(`replica '${name}': rebuilt with ${rows} rows as of source position ${result.position}`);
      // A replica stopped in needs_resync (or failed) waits for resume; a running one simply goes on.
      try {
        const client = await connectClient();
        const handle = client.workflow.getHandle(replicaWorkflowId(name));
        const { state } = await handle.query(replicaStatusQuery);
        if (state === 'needs_resync' || state === 'failed') {
          await handle.signal(resumeSignal);
          say(`replica '${name}': resumed; it catches up from the stream`);
        } else say(`replica '${name}': ${state}; it catches up from the stream${state === 'paused' ? ' once resumed' : ''}`);
      } catch (err) {
        say(`replica '${name}': not resumed (${err instanceof Error ? err.message : String(err)}); it catches up once pgferry up runs it`);
      }
      process.exit(EXIT.ok);
    }),
  );

connectionOptions(replica.command('rewind <name>'))
  .description('continue a replica restored from a backup taken at a source position, from the retained stream')
  .requiredOption('--to <position>', 'source LSN the replica holds everything up to, e.g. 16/B374D848')
  .option('--json', 'machine-readable output')
  .action(
    action(async (name: string, opts: RawConfig & { to: string; json?: boolean }) => {
      const config = loadConfig(opts);
      const conn = await connectRabbit(config.rabbitmqUrl);
      let r;
      try {
        r = await rewindReplica({ rabbit: conn, source: config.source.name, replica: name, replicaUrl: replicaUrl(config, name), to: opts.to });
      } finally {
        await conn.close().catch(() => undefined);
      }
      if (opts.json) printJson({ ok: true, replica: name, ...r });
      else {
        process.stdout.write(
          `replica '${name}' rewound to ${r.lsn}: it reads the stream after offset ${r.offset}` +
            `${r.next ? ` and applies from transaction ${r.next} on` : ''} at its next batch (resume it if it is paused or failed)\n`,
        );
      }
      process.exit(EXIT.ok);
    }),
  );

for (const [verb, signal, done] of [
  ['pause', pauseSignal, 'paused (takes effect after the batch in flight, within about 2 seconds)'],
  ['resume', resumeSignal, 'resumed'],
] as const) {
  replica
    .command(`${verb} <name>`)
    .description(verb === 'pause' ? 'stop applying to a replica (its position is kept)' : 'continue applying to a paused or failed replica')
    .option('--json', 'machine-readable output')
    .action(
      action(async (name: string, opts: { json?: boolean }) => {
        const client = await connectClient();
        try {
          await client.workflow.getHandle(replicaWorkflowId(name)).signal(signal);
        } catch (err) {
          if (err instanceof WorkflowNotFoundError) {
            throw new CliFailure(`replica '${name}' not found (no running workflow ${replicaWorkflowId(name)}); pgferry replica list shows the replicas`, EXIT.failed);
          }
          throw err;
        }
        if (opts.json) printJson({ ok: true, replica: name, action: verb });
        else process.stdout.write(`replica '${name}' ${done}\n`);
      }),
    );
}

program
  .command('capture')
  .description('inspect capture')
  .command('status')
  .description('slot position acknowledged, transactions captured, errors, and the part of the change stream still retained')
  .option('--source-name <name>', 'source name (env PGFERRY_SOURCE_NAME)', process.env.PGFERRY_SOURCE_NAME ?? 'main')
  .option('--rabbitmq <url>', 'RabbitMQ URL (env PGFERRY_RABBITMQ_URL)')
  .option('--json', 'machine-readable output')
  .action(
    action(async (opts: { sourceName: string; rabbitmq?: string; json?: boolean }) => {
      const client = await connectClient();
      const v = await captureView(client, opts.sourceName);
      const retained = await streamRange(loadConfig({ sourceName: opts.sourceName, rabbitmq: opts.rabbitmq }), opts.sourceName);
      if (opts.json) printJson({ ...v, workflowId: captureWorkflowId(opts.sourceName), retained });
      else {
        const range = 'error' in retained ? `? (${retained.error})` : retained.first ? `${retained.first.offset}–${retained.last!.offset} (${retained.first.lsn} … ${retained.last!.lsn})` : 'empty';
        const rows = [
          ['SOURCE', 'STATE', 'CONFIRMED', 'LAST COMMIT', 'TXNS', 'RETAINED OFFSETS', 'ERROR'],
          [
            v.source,
            v.state,
            v.confirmedLsn ?? '-',
            v.lastCommitTime ?? '-',
            String(v.txns + (v.live?.txns ?? 0)),
            range,
            v.lastError ?? (v.retrying ? `retrying: ${v.retrying}` : ''),
          ],
        ];
        process.stdout.write(`${table(rows)}\n`);
      }
      if (v.state === 'failed' || v.state === 'needs_resync') process.exitCode = EXIT.failed;
    }),
  );

/** The retained part of a source's change stream, or why it could not be read (status must still print). */
async function streamRange(config: Config, source: string): Promise<{ first: StreamEnd | null; last: StreamEnd | null } | { error: string }> {
  try {
    const conn = await connectRabbit(config.rabbitmqUrl);
    try {
      return await retainedRange(conn, source);
    } finally {
      await conn.close().catch(() => undefined);
    }
  } catch (err) {
    return { error: err instanceof PgferryError ? err.message : describeCause(err) };
  }
}

program.parseAsync(process.argv).catch((err) => fail(err, process.argv.includes('--json')));
