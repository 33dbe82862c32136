/**
 * pgferry's errors, and the one place that decides what a failure means.
 *
 * Each error says what went wrong with which thing and how to fix it. A
 * `permanent` error needs an operator; the others may pass (a server
 * restarting) and are retried with backoff while being reported. Errors from
 * PostgreSQL are classified by SQLSTATE (named in `SQLSTATE` below, the only
 * place the codes are spelled), never by message text — except where the
 * server gives one code to several causes, and then the pattern lives here too.
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

/**
 * An application's handler kept failing on a change: its subscriber stops
 * there (never skipping it) and continues from it once started again.
 */
export class HandlerFailedError extends PgferryError {
  /** The subscriber whose handler failed. */
  readonly subscriber?: string;
  constructor(message: string, options?: { cause?: unknown; sourceLsn?: string; subscriber?: string }) {
    super(message, options);
    if (options?.subscriber) this.subscriber = options.subscriber;
  }
}

/**
 * The permanent error classes by name. Object keys, not `Class.name`, so the
 * list survives a bundler that renames classes (the workflows import it).
 */
const PERMANENT_ERRORS = { ConfigError, SourceError, SchemaMismatchError, RejectedChangeError, GapError, ProtocolError, HandlerFailedError };

/** The error types every workflow's retry policy treats as non-retryable: derived from the classes above. */
export const NON_RETRYABLE: string[] = Object.keys(PERMANENT_ERRORS);

/** The SQLSTATE codes pgferry looks at (PostgreSQL, Appendix A), by their condition names. */
export const SQLSTATE = {
  readOnlySqlTransaction: '25006',
  invalidAuthorizationSpecification: '28000',
  invalidPassword: '28P01',
  invalidCatalogName: '3D000', // the database does not exist
  serializationFailure: '40001',
  deadlockDetected: '40P01',
  uniqueViolation: '23505',
  insufficientPrivilege: '42501',
  undefinedTable: '42P01',
  undefinedColumn: '42703',
  datatypeMismatch: '42804',
  undefinedObject: '42704',
  duplicateObject: '42710',
  objectNotInPrerequisiteState: '55000',
  invalidParameterValue: '22023', // e.g. an exported snapshot that is gone
  objectInUse: '55006',
  lockNotAvailable: '55P03',
  systemError: '58000',
  ioError: '58030',
} as const;

/** SQLSTATE classes (the first two or three characters) after which a retry may succeed. */
const TRANSIENT_CLASSES = [
  '08', // connection exception
  '53', // insufficient resources (too many connections; disk full is 53100)
  '57P', // operator intervention: admin shutdown, crash shutdown, cannot connect now
];
const TRANSIENT_CODES: readonly string[] = [
  SQLSTATE.serializationFailure,
  SQLSTATE.deadlockDetected,
  SQLSTATE.objectInUse, // a replication slot another session still holds
  SQLSTATE.lockNotAvailable,
  SQLSTATE.systemError,
  SQLSTATE.ioError,
];

/** Node socket errors that mean "nothing answered right now". */
const TRANSIENT_NET = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/** node-postgres reports a dropped socket without a code. */
const DROPPED_CONNECTION = /Connection terminated|connection closed|socket hang up/i;

/** The SQLSTATE of a PostgreSQL error, or undefined for anything else (socket errors carry other codes). */
export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** SQLSTATE classes/codes after which a retry may succeed (connection, shutdown, conflicts, in-use slot). */
function isTransientSqlState(code: string | undefined): boolean {
  if (!code) return false;
  return TRANSIENT_CLASSES.some((c) => code.startsWith(c)) || TRANSIENT_CODES.includes(code);
}

/**
 * What a failure means for whoever retries:
 * - `permanent`: retrying gives the same answer; an operator must act;
 * - `transient`: a server is away or busy; retry with backoff;
 * - `refused`: PostgreSQL refused a statement (a constraint, a type, a missing
 *   object): permanent for that statement, and the caller says which thing;
 * - `unexpected`: none of these (a bug, or an error pgferry does not know):
 *   retried, and logged as unexpected.
 */
export type ErrorClass = 'permanent' | 'transient' | 'refused' | 'unexpected';

export function classifyError(err: unknown): ErrorClass {
  if (err instanceof PgferryError) return err.permanent ? 'permanent' : 'transient';
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && TRANSIENT_NET.has(code)) return 'transient';
  const state = sqlState(err);
  if (state) return isTransientSqlState(state) ? 'transient' : 'refused';
  if (DROPPED_CONNECTION.test(String((err as Error)?.message ?? ''))) return 'transient';
  return 'unexpected';
}

export function isTransient(err: unknown): boolean {
  return classifyError(err) === 'transient';
}

/** PostgreSQL answered with an error about the statement itself (not the connection): apply reports it with the row. */
export function isRefusal(err: unknown): boolean {
  return classifyError(err) === 'refused';
}

/** The replica refused a change because its schema differs (missing table or column, another type). */
export function isSchemaMismatch(err: unknown): boolean {
  const s = sqlState(err);
  return s === SQLSTATE.undefinedTable || s === SQLSTATE.undefinedColumn || s === SQLSTATE.datatypeMismatch;
}

/** A unique constraint (or primary key) refused a row. */
export function isUniqueViolation(err: unknown): boolean {
  return sqlState(err) === SQLSTATE.uniqueViolation;
}

/** Not allowed: a missing privilege (or, for replication connections, a missing REPLICATION attribute or pg_hba entry). */
export function isPrivilegeError(err: unknown): boolean {
  return sqlState(err) === SQLSTATE.insufficientPrivilege;
}

export function isAuthenticationError(err: unknown): boolean {
  const s = sqlState(err);
  return s === SQLSTATE.invalidPassword || s === SQLSTATE.invalidAuthorizationSpecification;
}

/** The server is a standby in recovery: it refuses writes (25006, or a message naming recovery). */
export function isReadOnlyServer(err: unknown): boolean {
  return sqlState(err) === SQLSTATE.readOnlySqlTransaction || /recovery/i.test(String((err as Error)?.message ?? ''));
}

/** START_REPLICATION on a slot that does not exist. */
export function isMissingSlot(err: unknown): boolean {
  return sqlState(err) === SQLSTATE.undefinedObject;
}

/** START_REPLICATION on a slot that lost WAL it needs (55000 is shared by other causes; the message tells them apart). */
export function isInvalidatedSlot(err: unknown): boolean {
  return sqlState(err) === SQLSTATE.objectNotInPrerequisiteState && /invalidated|wal_status|removed/i.test(String((err as Error)?.message ?? ''));
}

/** The slot is active for another session (capture still running elsewhere). */
export function isSlotInUse(err: unknown): boolean {
  return sqlState(err) === SQLSTATE.objectInUse;
}

/** CREATE … for an object another session just created. */
export function isDuplicateObject(err: unknown): boolean {
  return sqlState(err) === SQLSTATE.duplicateObject;
}

export function isMissingDatabase(err: unknown): boolean {
  return sqlState(err) === SQLSTATE.invalidCatalogName;
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
