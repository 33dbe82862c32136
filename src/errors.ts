/**
 * pgferry's errors. Each says what went wrong with which thing and how to fix
 * it. `permanent` errors need an operator; the others may pass (a server
 * restarting) and are retried with backoff while being reported.
 */
export class PgferryError extends Error {
  /** True when retrying cannot help: the operator must change something. */
  readonly permanent: boolean = true;
  /** The source transaction (commit position) the error is about, when it is about one. */
  readonly sourceLsn?: string;
  constructor(message: string, options?: { cause?: unknown; sourceLsn?: string }) {
    super(message, options);
    this.name = new.target.name;
    if (options?.sourceLsn) this.sourceLsn = options.sourceLsn;
  }
}

export class ConfigError extends PgferryError {}

/** A server that could not be reached or dropped the connection: worth retrying. */
export class UnavailableError extends PgferryError {
  override readonly permanent = false;
}

/** Source prerequisites are missing (wal_level, tables, privileges). */
export class SourceError extends PgferryError {}

/** A replica's schema does not match what the source sends. */
export class SchemaMismatchError extends PgferryError {}

/** A replica refused a change (constraint, type, missing column...). */
export class RejectedChangeError extends PgferryError {}

/** The stream or slot no longer holds what a consumer needs. */
export class GapError extends PgferryError {}

/**
 * The change log breaks its protocol (a message pgferry cannot read, chunks
 * out of order, a transaction cut short and followed by a later one): the
 * same log would be read the same way again, so retrying cannot help.
 */
export class ProtocolError extends PgferryError {}

/** Names of the error classes an activity reports as non-retryable. */
export const NON_RETRYABLE = [
  'ConfigError',
  'SourceError',
  'SchemaMismatchError',
  'RejectedChangeError',
  'GapError',
  'ProtocolError',
];

interface PgLikeError {
  code?: string;
  message?: string;
}

/** SQLSTATE classes/codes after which a retry may succeed (connection, shutdown, conflicts, in-use slot). */
export function isTransientSqlState(code: string | undefined): boolean {
  if (!code) return false;
  if (code.startsWith('08')) return true; // connection exception
  if (code.startsWith('53')) return true; // insufficient resources (too many connections, disk full is 53100)
  if (code.startsWith('57P')) return true; // operator intervention: admin shutdown, crash shutdown, cannot connect now
  return ['40001', '40P01', '55006', '55P03', '58000', '58030'].includes(code);
}

/** Node socket errors that mean "nothing answered right now". */
const TRANSIENT_NET = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

export function isTransient(err: unknown): boolean {
  if (err instanceof PgferryError) return !err.permanent;
  const e = err as PgLikeError & { errno?: unknown; code?: string };
  if (e && typeof e.code === 'string') {
    if (TRANSIENT_NET.has(e.code)) return true;
    if (/^[0-9A-Z]{5}$/.test(e.code)) return isTransientSqlState(e.code);
  }
  const msg = String((err as Error)?.message ?? '');
  // node-postgres reports a dropped socket without a code.
  return /Connection terminated|connection closed|socket hang up/i.test(msg);
}

/** One-line cause of any error, without stack or connection secrets. */
export function describeCause(err: unknown): string {
  const e = err as { code?: string; message?: string; errors?: unknown[] };
  if (e && Array.isArray(e.errors) && e.errors.length && !e.message) {
    return describeCause(e.errors[0]); // AggregateError from dual-stack connects
  }
  const msg = (e?.message ?? String(err)).split('\n')[0];
  const code = e?.code && !msg.includes(e.code) ? ` [${e.code}]` : '';
  return `${msg}${code}`;
}

/**
 * An application's handler kept failing on a change: its subscriber stops
 * there (never skipping it) and continues from it once started again.
 */
export class HandlerFailedError extends PgferryError {}
