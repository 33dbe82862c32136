/**
 * `pgferry table add | remove | list`: tables joining and leaving a running
 * pipeline (src/snapshot/join.ts), and what each replica takes
 * (src/apply/table-registry.ts). They talk to the databases directly; the
 * running replicas pick the change up at their next batch.
 */
import type { Command } from 'commander';
import { loadConfig, parseTableName, RawConfig, replicaUrl } from '../config';
import { withClient } from '../pg';
import { joinTables, removeTables } from '../snapshot/join';
import { snapshotProgressBar } from '../snapshot/progress-bar';
import { tableKey, TableRegistry } from '../apply/table-registry';
import { relLabel } from '../change';
import { EXIT, printJson, table } from './output';
import { action, connectionOptions, parseParallel, say } from './command';

export function addTableCommands(program: Command): void {
  const cmd = program.command('table').description('tables joining and leaving a running pipeline');
  addTableAdd(cmd);
  addTableRemove(cmd);
  addTableList(cmd);
}

const onlyOption = ['--only <replicas>', 'only these replicas (comma-separated names); default: every replica whose tables include it'] as const;
const names = (list: string | undefined) => list?.split(',').map((s) => s.trim()).filter(Boolean);

function addTableAdd(cmd: Command): void {
  connectionOptions(cmd.command('add <tables...>'))
    .description(
      'bring tables into a running pipeline: capture them (as the config says), copy each from a snapshot into every replica while the other tables stream, then apply their changes from exactly after the snapshot',
    )
    .option(...onlyOption)
    .option('--create-tables', 'first create the tables a replica lacks, from the source definitions')
    .option('--replace', "replace rows a replica's table already holds with the source's")
    .option('--parallel <n>', 'tables copied at a time', '4')
    .option('--json', 'machine-readable output')
    .action(
      action(async (specs: string[], opts: RawConfig & { only?: string; createTables?: boolean; replace?: boolean; parallel: string; json?: boolean }) => {
        const parallel = parseParallel(opts.parallel);
        const config = loadConfig(opts);
        const started = Date.now();
        let bar: ReturnType<typeof snapshotProgressBar> | null = null;
        let barFor = '';
        const quiet = (line: string) => {
          if (opts.json) return;
          bar?.stop(); // a line of its own, not inside the bar
          bar = null;
          barFor = '';
          say(line);
        };
        let results;
        try {
          results = await joinTables(config, specs, {
            replicas: names(opts.only),
            createTables: Boolean(opts.createTables),
            replace: Boolean(opts.replace),
            parallel,
            say: quiet,
            onProgress: (replica, tables) => {
              if (opts.json) return;
              if (barFor !== replica) {
                bar?.stop();
                bar = snapshotProgressBar();
                barFor = replica;
              }
              bar!.update(tables);
            },
          });
        } finally {
          (bar as ReturnType<typeof snapshotProgressBar> | null)?.stop();
        }
        if (opts.json) printJson({ ok: true, joined: results });
        else {
          for (const r of results) {
            say(
              `replica '${r.replica}': ${r.tables.join(', ')} joined with ${r.rows} rows as of source position ${r.position}, ` +
                `${r.replayed} change(s) made during the copy applied; later changes stream in`,
            );
          }
          say(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
        }
        process.exit(EXIT.ok);
      }),
    );
}

function addTableRemove(cmd: Command): void {
  connectionOptions(cmd.command('remove <tables...>'))
    .description("stop applying tables to replicas (their rows stay there); to stop capturing them too, take them out of the source's tables")
    .option(...onlyOption)
    .option('--json', 'machine-readable output')
    .action(
      action(async (specs: string[], opts: RawConfig & { only?: string; json?: boolean }) => {
        const config = loadConfig(opts);
        const results = await removeTables(config, specs, { replicas: names(opts.only), say });
        if (opts.json) printJson({ ok: true, removed: results });
        else {
          for (const r of results) say(`replica '${r.replica}': ${r.tables.join(', ')} removed at source position ${r.position}; no later change is applied, the rows stay`);
          const selected = config.source.tables?.map((t) => tableKey(parseTableName(t).schema, parseTableName(t).table));
          const still = specs.filter((t) => !selected || selected.includes(tableKey(parseTableName(t).schema, parseTableName(t).table)));
          if (still.length) {
            say(`the source still captures ${still.join(', ')} (subscribers see its changes, a replica may take it again with pgferry table add); to stop capturing it, take it out of the source's tables (sources[].tables) and restart pgferry up`);
          }
        }
        process.exit(EXIT.ok);
      }),
    );
}

function addTableList(cmd: Command): void {
  connectionOptions(cmd.command('list'))
    .description('the tables each replica takes, and their state (ready, copying: joining now or interrupted, removed)')
    .option(...onlyOption)
    .option('--json', 'machine-readable output')
    .action(
      action(async (opts: RawConfig & { only?: string; json?: boolean }) => {
        const config = loadConfig(opts);
        const out: { replica: string; tables: { table: string; state: string; from: string; since?: string }[] }[] = [];
        for (const name of names(opts.only) ?? config.replicas.map((r) => r.name)) {
          const entries = await withClient(`replica '${name}'`, replicaUrl(config, name), (c) => TableRegistry.list(c, name));
          out.push({ replica: name, tables: entries.map((e) => ({ table: relLabel(e), state: e.state, from: e.from, since: e.updatedAt })) });
          if (!opts.json && !entries.length) say(`replica '${name}': no tables registered yet (pgferry up registers them)`);
        }
        if (opts.json) printJson(out);
        else {
          const rows = [['REPLICA', 'TABLE', 'STATE', 'FROM', 'SINCE']];
          for (const r of out) for (const t of r.tables) rows.push([r.replica, t.table, t.state, t.from, t.since ?? '']);
          if (rows.length > 1) process.stdout.write(`${table(rows)}\n`);
        }
        process.exit(EXIT.ok);
      }),
    );
}
