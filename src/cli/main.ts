/** The `pgferry` command line: every command and its options, wired to src/app (composition roots) and the libraries. */
import { Command, Option } from 'commander';
import * as path from 'node:path';
import * as readline from 'node:readline/promises';
import { loadConfig, RawConfig, redactConfig, requireSourceUrl } from '../config';
import { uninstallSource } from '../capture/uninstall';
import { redactUrl } from '../redact';
import { CliFailure, EXIT, fail, printJson, table } from './output';
import { action, connectionOptions, say, settingOption } from './command';
import { addMaintenanceCommands } from './maintenance';
import { connectClient, temporalAddress } from '../temporal/connection';
import { captureView, listReplicaNames, replicaView, ReplicaView } from '../temporal/inspect';
import type { QueueName } from '../app/worker';
// up, init, worker and demo are imported by their commands when run: the Temporal worker and what it
// loads took a third of every other command's start (pgferry replica resume: 0.64 s, mostly module loading).
import { captureWorkflowId, replicaWorkflowId, streamName } from '../names';
import { addStatusCommand, renderReplicas, streamRange } from './status';
import { addTemporalCommands } from './temporal-setup';
import { addTailCommand } from './tail';
import { addSubscriberCommands } from './subscriber';
import { addTableCommands } from './table';
import { addPauseResumeCommands } from './pause-resume';
import { addReplicaLifecycleCommands } from './replica-lifecycle';
import { stringify as yamlStringify } from 'yaml';

/** The `pgferry` command line. Human output by default, --json for scripts; see EXIT for exit codes. */
const program = new Command('pgferry')
  .description('Durable PostgreSQL replication: capture → RabbitMQ stream → Temporal-driven apply')
  .showHelpAfterError()
  .configureOutput({ outputError: (str, write) => write(str) })
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : EXIT.usage))
  .option('--config <file>', 'config file (YAML; env PGFERRY_CONFIG); flags and PGFERRY_* variables override it')
  // Every command reads the file through PGFERRY_CONFIG, so commands without connection options (status, pause, …) see it too.
  .hook('preAction', (cmd) => {
    const file = cmd.opts().config as string | undefined;
    if (file) process.env.PGFERRY_CONFIG = path.resolve(file);
  });

/** Configuration for commands that only talk to Temporal and RabbitMQ (the config file and environment). */
const settings = () => loadConfig({});


const queuesOption = new Option('--queues <list>', 'task queues this process serves: capture, apply, or both').default('capture,apply');

function parseQueues(list: string): QueueName[] {
  const qs = list.split(',').map((q) => q.trim()).filter(Boolean);
  const bad = qs.filter((q) => q !== 'capture' && q !== 'apply');
  if (bad.length || !qs.length) throw new CliFailure(`--queues '${list}': use capture, apply or capture,apply`, EXIT.usage);
  return qs as QueueName[];
}


connectionOptions(program.command('up'))
  .description('run everything: Temporal (dev server unless TEMPORAL_ADDRESS is set), worker, capture and replica workflows')
  .addOption(queuesOption)
  .option('--temporal-port <port>', 'port of the dev server started when TEMPORAL_ADDRESS is unset', '7233')
  .option('--ui-port <port>', 'port of the dev server Web UI', '8233')
  .action(
    action(async (opts: RawConfig & { queues: string; temporalPort: string; uiPort: string }) => {
      const config = loadConfig(opts);
      const { up } = await import('../app/up');
      await up(config, { queues: parseQueues(opts.queues), temporalPort: Number(opts.temporalPort), uiPort: Number(opts.uiPort), say });
      process.exit(EXIT.ok); // everything is closed; do not wait on stray timers
    }, { log: true }),
  );

connectionOptions(program.command('init'))
  .description('prepare the source (publication, replication slot) and check every replica, without starting anything; reports what to fix')
  .action(
    action(async (opts: RawConfig) => {
      const config = loadConfig(opts);
      const { initialize } = await import('../app/init');
      const { replicaErrors } = await initialize(config, say);
      if (replicaErrors.size) {
        say(`${replicaErrors.size} replica(s) not ready: fix what is reported above, then run pgferry init again`);
        process.exit(EXIT.failed);
      }
      say(`ready: run pgferry up to start replicating`);
      process.exit(EXIT.ok);
    }, { log: true }),
  );

connectionOptions(program.command('uninstall'))
  .description('remove everything pgferry installed on the source (slot and publication, or triggers and schema pgferry)')
  .option('--yes', 'do not ask for confirmation')
  .action(
    action(async (opts: RawConfig & { yes?: boolean }) => {
      const config = loadConfig(opts);
      const url = requireSourceUrl(config);
      if (!opts.yes) {
        if (!process.stdin.isTTY) throw new CliFailure(`uninstall: pass --yes to confirm (there is no terminal to ask)`, EXIT.usage);
        const rl = readline.createInterface({ input: process.stdin, output: process.stdout });
        const answer = await rl.question(`Remove pgferry's slot, publication, triggers and schema from source '${config.source.name}' at ${redactUrl(url)}? [y/N] `);
        rl.close();
        if (!/^y(es)?$/i.test(answer.trim())) {
          say('nothing removed');
          process.exit(EXIT.failed);
        }
      }
      const removed = await uninstallSource(url, config.source.name);
      say(removed.length ? `removed from source '${config.source.name}':\n${removed.map((r) => `  ${r}`).join('\n')}` : `nothing of pgferry's was installed on source '${config.source.name}'`);
      say(`the change stream ${streamName(config.source.name)} in RabbitMQ is kept; delete it there if no replica or subscriber needs it`);
      process.exit(EXIT.ok);
    }, { log: true }),
  );

connectionOptions(program.command('worker'))
  .description('run only a worker (connects to TEMPORAL_ADDRESS); for deployments with several worker processes')
  .addOption(queuesOption)
  .action(
    action(async (opts: RawConfig & { queues: string }) => {
      const config = loadConfig(opts);
      const { startWorkers } = await import('../app/worker');
      const workers = await startWorkers(config, temporalAddress(config.temporal), parseQueues(opts.queues));
      process.stdout.write(`pgferry worker running on ${temporalAddress(config.temporal)} (queues: ${opts.queues})\n`);
      process.once('SIGINT', () => void workers.shutdown());
      process.once('SIGTERM', () => void workers.shutdown());
      await workers.run;
      process.exit(EXIT.ok);
    }, { log: true }),
  );


program
  .command('demo')
  .description('see replication live: a throwaway source and two replicas (private PostgreSQL clusters), Temporal, pgferry and a gentle write workload; Ctrl-C removes it all')
  .option('--rate <n>', 'transactions per second written to the demo source', '5')
  .option('--duration <seconds>', 'stop by itself after this long (default: run until Ctrl-C)')
  .action(
    action(async (opts: { rate: string; duration?: string }) => {
      const perSecond = Number(opts.rate);
      const durationSeconds = opts.duration === undefined ? undefined : Number(opts.duration);
      if (!(perSecond > 0)) throw new CliFailure(`--rate '${opts.rate}': give a number of transactions per second > 0`, EXIT.usage);
      if (durationSeconds !== undefined && !(durationSeconds > 0)) throw new CliFailure(`--duration '${opts.duration}': give a number of seconds > 0`, EXIT.usage);
      const { runDemo } = await import('../app/demo');
      const ok = await runDemo({ perSecond, durationSeconds, say });
      process.exit(ok ? EXIT.ok : EXIT.failed);
    }, { log: true }),
  );

connectionOptions(program.command('config').description('configuration file and settings').command('check'))
  .description('validate the configuration (file, environment, flags) without connecting to anything; prints the result with passwords masked')
  .option('--json', 'machine-readable output')
  .action(
    action(async (opts: RawConfig & { json?: boolean }) => {
      const config = loadConfig(opts);
      const shown = redactConfig(config);
      if (opts.json) printJson({ ok: true, config: shown });
      else {
        say(`configuration is valid${process.env.PGFERRY_CONFIG ? ` (${process.env.PGFERRY_CONFIG})` : ''}:`);
        say(yamlStringify(shown).trimEnd().replace(/^/gm, '  '));
      }
    }),
  );

const replica = program.command('replica').description('inspect and control replicas');

replica
  .command('list')
  .description('list running replicas')
  .option('--json', 'machine-readable output')
  .action(
    action(async (opts: { json?: boolean }) => {
      const client = await connectClient(settings().temporal);
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
      const client = await connectClient(settings().temporal);
      const names = name ? [name] : await listReplicaNames(client);
      const views: ReplicaView[] = [];
      for (const n of names) views.push(await replicaView(client, n));
      if (opts.json) printJson(name ? views[0] : views);
      else if (!views.length) process.stdout.write('no replicas are running (start them with pgferry up)\n');
      else process.stdout.write(`${renderReplicas(views)}\n`);
      if (views.some((v) => v.state === 'failed' || v.state === 'needs_resync')) process.exitCode = EXIT.failed;
    }),
  );

addReplicaLifecycleCommands(replica);
addMaintenanceCommands(program, replica);
addStatusCommand(program);
addTemporalCommands(program);
addTailCommand(program);
addSubscriberCommands(program);
addTableCommands(program);


addPauseResumeCommands(replica, {
  kind: 'replica',
  workflowId: replicaWorkflowId,
  listHint: 'pgferry replica list shows the replicas',
  pause: { description: 'stop applying to a replica (its position is kept)', done: 'paused: the batch in flight has committed, nothing more is applied until resume' },
  resume: { description: 'continue applying to a paused or failed replica' },
});

const captureStatus = program
  .command('capture')
  .description('inspect capture')
  .command('status')
  .description('slot position acknowledged, transactions captured, errors, and the part of the change stream still retained');
for (const flag of ['sourceName', 'rabbitmq'] as const) settingOption(captureStatus, flag);
captureStatus
  .option('--json', 'machine-readable output')
  .action(
    action(async (opts: { sourceName?: string; rabbitmq?: string; json?: boolean }) => {
      const config = loadConfig({ sourceName: opts.sourceName, rabbitmq: opts.rabbitmq });
      const source = config.source.name;
      const client = await connectClient(config.temporal);
      const v = await captureView(client, source);
      const retained = await streamRange(config);
      if (opts.json) printJson({ ...v, workflowId: captureWorkflowId(source), retained });
      else {
        const range = 'error' in retained ? `? (${retained.error})` : retained.first ? `${retained.first.offset}–${retained.last!.offset} (${retained.first.lsn} … ${retained.last!.lsn})` : 'empty';
        const rows = [
          ['SOURCE', 'STATE', 'CONFIRMED', 'LAST COMMIT', 'TXNS', 'RETAINED OFFSETS', 'CHANGE LOG', 'ERROR'],
          [
            v.source,
            v.state,
            v.confirmedLsn ?? '-',
            v.lastCommitTime ?? '-',
            String(v.txns + (v.live?.txns ?? 0)),
            range,
            // trigger mode: events on the source not yet confirmed by RabbitMQ
            v.live?.logEvents !== undefined ? `${v.live.logEvents} events, ${Math.round((v.live.logBytes ?? 0) / 1024)} kB` : '-',
            v.lastError ?? (v.retrying ? `retrying: ${v.retrying}` : ''),
          ],
        ];
        process.stdout.write(`${table(rows)}\n`);
      }
      if (v.state === 'failed' || v.state === 'needs_resync') process.exitCode = EXIT.failed;
    }),
  );

program.parseAsync(process.argv).catch((err) => fail(err, process.argv.includes('--json')));
