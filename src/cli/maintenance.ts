/**
 * Commands that fill, rebuild, reposition and check replicas: verify,
 * replica add / resync / rewind / sync-sequences. They talk to the databases
 * (and RabbitMQ) directly; only resync also signals the replica's workflow.
 */
import type { Command } from 'commander';
import { loadConfig, RawConfig, replicaUrl, requireSourceUrl } from '../config';
import { withClient } from '../pg';
import { syncSequences } from '../apply/sequences';
import { rewindReplica } from '../apply/rewind';
import { connectRabbit } from '../changelog/rabbit';
import { sourceHistory } from '../capture/prepare';
import { CliFailure, EXIT, printJson, table } from './output';
import { action, connectionOptions, parseParallel, say } from './command';
import { connectClient } from '../temporal/connection';
import { replicaStatusQuery, resumeSignal } from '../../workflows/messages';
import { replicaWorkflowId, snapshotWorkflowId } from '../names';
import { verifyReplica } from '../verify/command';
import type { TableVerdict } from '../verify/verify';
import { resyncReplica } from '../snapshot/resync';
import { snapshotProgressBar } from '../snapshot/progress-bar';

export function addMaintenanceCommands(program: Command, replica: Command): void {
  addVerifyCommand(program);
  addReplicaAddCommand(replica);
  addSyncSequencesCommand(replica);
  addResyncCommand(replica);
  addRewindCommand(replica);
}

/** `pgferry verify <name>`: compare a replica with the source by content. */
function addVerifyCommand(program: Command): void {
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
}

/** `pgferry replica add <name> --snapshot`: fill a new, empty replica from a snapshot. */
function addReplicaAddCommand(replica: Command): void {
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
        const parallel = parseParallel(opts.parallel);
        const config = loadConfig(opts);
        const bar = snapshotProgressBar();
        const started = Date.now();
        let r;
        try {
          const { runSnapshot } = await import('../app/snapshot-run'); // with the Temporal worker: loaded only by this command
          r = await runSnapshot(config, name, { createTables: Boolean(opts.createTables), parallel, onProgress: (t) => bar.update(t) });
        } finally {
          bar.stop();
        }
        if (r.created.length) say(`replica '${name}': created ${r.created.join(', ')}`);
        for (const warning of r.warnings) say(`WARNING ${warning}`);
        const seconds = (Date.now() - started) / 1000;
        say(`snapshot of source '${config.source.name}' at ${r.position}: copied ${r.tables} table(s), ${parallel} at a time (workflow ${snapshotWorkflowId(name)})`);
        say(
          `replica '${name}': copied ${r.rows} rows (${(r.bytes / 1e6).toFixed(1)} MB) in ${r.tables} table(s) in ${seconds.toFixed(1)} s ` +
            `(${Math.round(r.rows / seconds)} rows/s), as of source position ${r.position}`,
        );
        say(`next: run pgferry up with --replica ${name}=… (or restart it with it): the replica catches up from the stream, skipping what the snapshot holds`);
        process.exit(EXIT.ok);
      }),
    );
}

/** `pgferry replica sync-sequences <name>`: raise the replica's sequences for a cut-over. */
function addSyncSequencesCommand(replica: Command): void {
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
}

/** `pgferry replica resync <name>`: rebuild a replica from a fresh snapshot. */
function addResyncCommand(replica: Command): void {
  connectionOptions(replica.command('resync <name>'))
    .description('rebuild a replica from a fresh snapshot (shadow tables swapped in one transaction), then let it catch up')
    .option('--parallel <n>', 'tables copied at a time', '4')
    .action(
      action(async (name: string, opts: RawConfig & { parallel: string }) => {
        const parallel = parseParallel(opts.parallel);
        const config = loadConfig(opts);
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
          const client = await connectClient(config.temporal);
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
}

/** `pgferry replica rewind <name> --to <lsn>`: continue a replica restored from a backup. */
function addRewindCommand(replica: Command): void {
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
          const sourceUrl = config.source.url;
          r = await rewindReplica({
            rabbit: conn,
            source: config.source.name,
            replica: name,
            replicaUrl: replicaUrl(config, name),
            to: opts.to,
            // A copy whose checkpoint records no history is placed in the source's history of now.
            sourceHistory: sourceUrl ? () => sourceHistory(config, sourceUrl) : undefined,
          });
        } finally {
          await conn.close().catch(() => undefined);
        }
        if (opts.json) printJson({ ok: true, replica: name, ...r });
        else {
          process.stdout.write(
            `replica '${name}' rewound to ${r.lsn}: it reads the stream after offset ${r.offset}` +
              `${r.next ? ` and applies from transaction ${r.next} on` : ''} at its next batch (resume it if it is paused or failed)` +
              `${r.history ? `; positions are read in source history ${r.history}` : ''}\n`,
          );
        }
        process.exit(EXIT.ok);
      }),
    );
}
