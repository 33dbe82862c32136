/**
 * Exit codes: 0 success; 1 the operation failed (a replica failed, not
 * found…); 2 bad usage or configuration; 3 a server could not be reached.
 */
import { ConfigError, PgferryError, UnavailableError, describeCause } from '../errors';
import { logger } from '../logger';

export const EXIT = { ok: 0, failed: 1, usage: 2, unavailable: 3 } as const;

export class CliFailure extends PgferryError {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

export function exitCodeFor(err: unknown): number {
  if (err instanceof CliFailure) return err.exitCode;
  if (err instanceof ConfigError) return EXIT.usage;
  if (err instanceof UnavailableError) return EXIT.unavailable;
  return EXIT.failed;
}

/** Print an error as one line (JSON with --json) and exit. Never a stack trace: PGFERRY_DEBUG=1 shows it. */
export function fail(err: unknown, json: boolean, log = false): never {
  const message = err instanceof PgferryError ? err.message : describeCause(err);
  // Long-running commands (up, worker) also leave the reason in their structured log.
  if (log) logger.error({ type: (err as Error)?.name }, message);
  if (json) process.stdout.write(`${JSON.stringify({ ok: false, error: message, type: (err as Error)?.name ?? 'Error' })}\n`);
  process.stderr.write(`pgferry: ${message}\n`);
  if (process.env.PGFERRY_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  process.exit(exitCodeFor(err));
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (c ?? '').padEnd(widths[i])).join('  ').trimEnd()).join('\n');
}
