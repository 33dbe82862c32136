/**
 * `pgferry tail`: watch a source's changes live, from the change log (it
 * needs RabbitMQ only, and stores nothing). Human-readable by default; with
 * --json one ChangeEvent per line, the same objects a subscriber's handler
 * receives. A transaction re-sent by capture is not printed twice.
 */
import type { Command } from 'commander';
import { loadConfig } from '../config';
import { relLabel } from '../change';
import { describeSchemaChange } from '../schema-change';
import { endOfLog, LogCursor, LogPosition, START_OF_LOG } from '../changelog/cursor';
import { connectRabbit } from '../changelog/rabbit';
import { requireStream } from '../changelog/stream';
import { normalizeLsn } from '../lsn';
import { ChangeEvent, Operation, compileFilter, eventsOf, splitList } from '../subscribe/events';
import { action } from './command';
import { CliFailure, EXIT } from './output';

export function addTailCommand(program: Command): void {
  program
    .command('tail')
    .description('watch changes live: one line per change (--json: one JSON object per line)')
    .option('--source <name>', "source name (env PGFERRY_SOURCE_NAME; default: the config file's only source, or main)")
    .option('--tables <list>', 'only these tables (comma-separated schema.table)')
    .option('--ops <list>', 'only these operations (comma-separated: insert, update, delete, truncate, schema)')
    .option('--from <where>', "now (default), beginning (the oldest change the stream retains) or an LSN (what committed after it)", 'now')
    .option('--count <n>', 'exit after printing this many changes')
    .option('--rabbitmq <url>', 'RabbitMQ URL (env PGFERRY_RABBITMQ_URL)')
    .option('--json', 'one JSON object per change')
    .action(
      action(async (opts: { source?: string; tables?: string; ops?: string; from: string; count?: string; rabbitmq?: string; json?: boolean }) => {
        const config = loadConfig({ sourceName: opts.source, rabbitmq: opts.rabbitmq });
        const source = config.source.name;
        const count = opts.count === undefined ? Infinity : Number(opts.count);
        if (count !== Infinity && !(Number.isInteger(count) && count >= 1)) throw new CliFailure(`--count '${opts.count}': use a whole number ≥ 1`, EXIT.usage);
        let filter;
        try {
          filter = compileFilter({ tables: splitList(opts.tables), operations: splitList(opts.ops) as Operation[] | undefined }, 'pgferry tail');
        } catch (err) {
          throw new CliFailure(`${(err as Error).message} (--tables, --ops)`, EXIT.usage);
        }
        let from: LogPosition | 'now';
        try {
          from = opts.from === 'now' ? 'now' : opts.from === 'beginning' ? START_OF_LOG : { lsn: normalizeLsn(opts.from), offset: null };
        } catch {
          throw new CliFailure(`--from '${opts.from}': use now, beginning or an LSN such as 0/16B3748`, EXIT.usage);
        }

        const rabbit = await connectRabbit(config.rabbitmqUrl);
        const who = 'pgferry tail';
        await requireStream(rabbit, source, who);
        const cursorOptions = { consumer: who, fix: 'tail again with --from beginning' };
        const cursor = await LogCursor.open(rabbit, source, from === 'now' ? await endOfLog(rabbit, source) : from, cursorOptions);
        let stop = false;
        const interrupted = () => {
          stop = true;
        };
        process.once('SIGINT', interrupted);
        process.once('SIGTERM', interrupted);
        process.stderr.write(`tailing source '${source}' from ${opts.from} (Ctrl-C to stop)\n`);
        const write = (line: string) => new Promise<void>((resolve) => (process.stdout.write(`${line}\n`) ? resolve() : process.stdout.once('drain', resolve)));

        let printed = 0;
        // The transaction being read, and how many of its changes are printed: a re-sent one continues after them.
        let txn = { lsn: '', nextIndex: 0, shown: 0 };
        try {
          while (!stop && printed < count) {
            const item = await cursor.next(500);
            if (!item || item.kind === 'restart') continue;
            const { m } = item;
            if (m.seq === 0) txn = m.lsn === txn.lsn ? { ...txn, nextIndex: 0 } : { lsn: m.lsn, nextIndex: 0, shown: 0 };
            const { events, nextIndex } = eventsOf(m, txn.nextIndex, filter);
            txn.nextIndex = nextIndex;
            for (const ev of events) {
              if (ev.index < txn.shown || printed >= count) continue;
              txn.shown = ev.index + 1;
              printed += 1;
              await write(opts.json ? JSON.stringify(ev) : humanLine(ev));
            }
          }
        } finally {
          await cursor.close();
          await rabbit.close().catch(() => undefined);
        }
        process.exit(EXIT.ok);
      }),
    );
}

/** "2026-11-21 14:03:07.123456 0/1A2B3C update public.orders {"id":"42"} → {"id":"42","total":"9.99"}". */
export function humanLine(ev: ChangeEvent): string {
  const when = ev.commitTime.replace('T', ' ').replace('Z', '');
  const head = `${when} ${ev.lsn} ${ev.operation.padEnd(8)} ${relLabel(ev)}`;
  switch (ev.operation) {
    case 'insert':
      return `${head} ${JSON.stringify(ev.new)}`;
    case 'update':
      return `${head} ${JSON.stringify(ev.key)} → ${JSON.stringify(ev.new)}`;
    case 'delete':
      return `${head} ${JSON.stringify(ev.old)}`;
    case 'truncate':
      return `${head}${ev.truncate?.cascade ? ' cascade' : ''}${ev.truncate?.restartIdentity ? ' restart identity' : ''}`;
    case 'schema':
      return `${head} ${ev.schemaChange ? describeSchemaChange({ op: 'schema', ...ev.schemaChange }) : ''}`;
  }
}
