/** The one error classifier (src/errors.ts): what each failure means for whoever retries it, by SQLSTATE and class, never by message text. */
import { describe, expect, it } from 'vitest';
import {
  ConfigError,
  GapError,
  HandlerFailedError,
  NON_RETRYABLE,
  PgferryError,
  ProtocolError,
  RejectedChangeError,
  SQLSTATE,
  SchemaMismatchError,
  SourceError,
  UnavailableError,
  classifyError,
  isAuthenticationError,
  isInvalidatedSlot,
  isMissingSlot,
  isReadOnlyServer,
  isRefusal,
  isSchemaMismatch,
  isSlotInUse,
  isTransient,
} from '../../src/errors';

const pgError = (code: string, message = 'server said no') => Object.assign(new Error(message), { code, severity: 'ERROR' });

describe('classifyError', () => {
  it.each([
    // pgferry's own errors: by class
    [new ConfigError('x'), 'permanent'],
    [new SourceError('x'), 'permanent'],
    [new RejectedChangeError('x'), 'permanent'],
    [new GapError('x'), 'permanent'],
    [new ProtocolError('x'), 'permanent'],
    [new HandlerFailedError('x'), 'permanent'],
    [new UnavailableError('x'), 'transient'],
    // sockets
    [Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), 'transient'],
    [Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), 'transient'],
    [new Error('Connection terminated unexpectedly'), 'transient'],
    // SQLSTATE classes and codes a retry may get past
    [pgError('08006'), 'transient'],
    [pgError('53300'), 'transient'],
    [pgError('57P01'), 'transient'],
    [pgError(SQLSTATE.serializationFailure), 'transient'],
    [pgError(SQLSTATE.deadlockDetected), 'transient'],
    [pgError(SQLSTATE.objectInUse), 'transient'],
    [pgError(SQLSTATE.lockNotAvailable), 'transient'],
    // the server refusing the statement
    [pgError('23505'), 'refused'],
    [pgError('23503'), 'refused'],
    [pgError(SQLSTATE.undefinedTable), 'refused'],
    [pgError('57014'), 'refused'], // query_canceled: class 57 but not operator intervention
    // text never decides for a coded error
    [pgError('23505', 'Connection terminated'), 'refused'],
    // neither
    [new TypeError('x is undefined'), 'unexpected'],
    [Object.assign(new Error('odd'), { code: 'SOMETHING' }), 'unexpected'],
  ] as const)('%o → %s', (err, kind) => {
    expect(classifyError(err)).toBe(kind);
    expect(isTransient(err)).toBe(kind === 'transient');
    expect(isRefusal(err)).toBe(kind === 'refused');
  });

  it.each([
    [isSchemaMismatch, [SQLSTATE.undefinedTable, SQLSTATE.undefinedColumn, SQLSTATE.datatypeMismatch], ['23505', '42501']],
    [isAuthenticationError, [SQLSTATE.invalidPassword, SQLSTATE.invalidAuthorizationSpecification], ['42501']],
    [isMissingSlot, [SQLSTATE.undefinedObject], ['42P01']],
    [isSlotInUse, [SQLSTATE.objectInUse], ['55000']],
  ] as const)('%o picks its codes', (pick, yes, no) => {
    for (const code of yes) expect(pick(pgError(code))).toBe(true);
    for (const code of no) expect(pick(pgError(code))).toBe(false);
  });

  it('tells an invalidated slot from other 55000 errors by the message PostgreSQL gives', () => {
    expect(isInvalidatedSlot(pgError('55000', 'can no longer get changes from replication slot "x": this slot has been invalidated'))).toBe(true);
    expect(isInvalidatedSlot(pgError('55000', 'cannot use a logical replication slot for physical replication'))).toBe(false);
    expect(isReadOnlyServer(pgError('25006'))).toBe(true);
    expect(isReadOnlyServer(pgError('XX000', 'recovery is in progress'))).toBe(true);
  });
});

describe('NON_RETRYABLE', () => {
  it('is derived from the permanent classes: each name is its class and permanent', () => {
    const classes: Record<string, new (m: string) => PgferryError> = {
      ConfigError,
      SourceError,
      SchemaMismatchError,
      RejectedChangeError,
      GapError,
      ProtocolError,
      HandlerFailedError,
    };
    expect([...NON_RETRYABLE].sort()).toEqual(Object.keys(classes).sort());
    for (const name of NON_RETRYABLE) {
      const e = new classes[name]('x');
      expect(e.name).toBe(name);
      expect(e.permanent).toBe(true);
    }
    expect(NON_RETRYABLE).not.toContain('UnavailableError');
  });

  it('keeps typed fields instead of attached properties', () => {
    const e = new HandlerFailedError('x', { subscriber: 'orders-app', sourceLsn: '0/10' });
    expect(e.subscriber).toBe('orders-app');
    expect(e.sourceLsn).toBe('0/10');
  });
});
