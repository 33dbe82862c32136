/**
 * Structured logs on stderr (stdout is for the command's own output: tables, --json).
 * JSON lines when stderr is not a terminal (files, journald, Kubernetes), readable
 * lines on a terminal; PGFERRY_LOG_FORMAT=json|pretty forces either.
 *
 * Passwords never reach a log: connection strings are redacted before logging,
 * the usual secret-bearing keys are censored, and every message and string
 * field goes through redactSecrets as the last line of defence.
 */
import pino from 'pino';
import pretty from 'pino-pretty';
import { redactSecrets } from './redact';

const format = process.env.PGFERRY_LOG_FORMAT ?? (process.stderr.isTTY ? 'pretty' : 'json');

function scrub(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redactSecrets(value);
  if (depth > 4 || value === null || typeof value !== 'object') return value;
  if (value instanceof Error) return { type: value.name, message: redactSecrets(value.message) };
  if (Array.isArray(value)) return value.map((v) => scrub(v, depth + 1));
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, scrub(v, depth + 1)]));
}

export const logger = pino(
  {
    level: process.env.PGFERRY_LOG_LEVEL ?? 'info',
    base: { pid: process.pid },
    redact: { paths: ['password', '*.password', 'url', '*.url', 'connectionString', '*.connectionString'], censor: '***' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { log: (obj) => scrub(obj) as Record<string, unknown> },
    hooks: {
      logMethod(args, method) {
        method.apply(this, args.map((a) => (typeof a === 'string' ? redactSecrets(a) : a)) as Parameters<typeof method>);
      },
    },
  },
  format === 'pretty' ? pretty({ destination: 2, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' }) : pino.destination(2),
);

export type Logger = pino.Logger;
