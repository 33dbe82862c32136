import pino from 'pino';

/**
 * Structured logs: JSON lines (pino) with fields such as { source, replica, lsn }.
 * Passwords never reach a log: connection strings are redacted before logging
 * and the usual secret-bearing keys are censored as a second line of defence.
 */
/** Logs go to stderr; stdout is for the command's own output (tables, --json). */
export const logger = pino(
  {
  level: process.env.PGFERRY_LOG_LEVEL ?? 'info',
  base: { pid: process.pid },
  redact: { paths: ['password', '*.password', 'url', '*.url', 'connectionString', '*.connectionString'], censor: '***' },
  timestamp: pino.stdTimeFunctions.isoTime,
  },
  pino.destination(2),
);

export type Logger = pino.Logger;
