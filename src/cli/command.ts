/**
 * Pieces every pgferry command is built from: connection options, the
 * error-to-exit-code wrapper, human output on stdout.
 */
import type { Command } from 'commander';
import type { RawConfig } from '../config';
import { connectionFlags, flagOption } from '../settings';
import { CliFailure, EXIT, fail } from './output';

export const say = (line: string) => process.stdout.write(`${line}\n`);

/**
 * The options that say where the source, replicas and RabbitMQ are (flags win
 * over PGFERRY_* variables), generated from the settings table (src/settings.ts):
 * the flag, its variable, default and help are spelled there once.
 */
export function connectionOptions(cmd: Command): Command {
  for (const flag of connectionFlags()) settingOption(cmd, flag);
  return cmd;
}

/** One option of the settings table on a command (`--replica` is repeatable). */
export function settingOption(cmd: Command, flag: keyof RawConfig): Command {
  const { flags, description } = flagOption(flag);
  if (flag === 'replica') return cmd.option(flags, description, (v: string, acc: string[]) => [...acc, v], [] as string[]);
  return cmd.option(flags, description);
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
