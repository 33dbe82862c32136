/**
 * Pieces every pgferry command is built from: connection options, the
 * error-to-exit-code wrapper, human output on stdout.
 */
import type { Command } from 'commander';
import { CliFailure, EXIT, fail } from './output';

export const say = (line: string) => process.stdout.write(`${line}\n`);

/** The options that say where the source, replicas and RabbitMQ are (flags win over PGFERRY_* variables). */
export function connectionOptions(cmd: Command): Command {
  return cmd
    .option('--source <url>', 'source database URL (env PGFERRY_SOURCE)')
    .option('--source-name <name>', 'name of the source: slot pgferry_<name>, stream pgferry.<name>.changes (env PGFERRY_SOURCE_NAME)', undefined)
    .option('--replica <name=url>', 'a replica, repeatable (env PGFERRY_REPLICAS="a=url,b=url")', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--tables <list>', 'comma-separated schema.table list to replicate (default: all tables; env PGFERRY_TABLES)')
    .option('--mode <mode>', 'capture mode: wal (logical decoding) or trigger (row triggers, for wal_level below logical); env PGFERRY_CAPTURE_MODE, default wal')
    .option('--rabbitmq <url>', 'RabbitMQ URL (env PGFERRY_RABBITMQ_URL, default amqp://guest:guest@127.0.0.1:5672)')
    .option('--data-dir <dir>', 'where pgferry keeps local state such as the dev server database (env PGFERRY_DATA_DIR, default .pgferry)')
    .option('--wait <seconds>', 'how long to keep retrying servers that do not answer at start-up (default 30)')
    .option('--metrics-port <port>', 'port of the Prometheus metrics endpoint of worker processes, 0 for none (env PGFERRY_METRICS_PORT, default 9464)');
}

/** Run a command; any error becomes one line (JSON with --json) and the exit code for its kind. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void>, opts: { log?: boolean } = {}) {
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

export function parseParallel(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new CliFailure(`--parallel '${value}': use a whole number ≥ 1`, EXIT.usage);
  return n;
}
