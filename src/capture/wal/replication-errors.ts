/**
 * What a failed replication connection means for WAL capture: a slot that is
 * gone or lost WAL is a gap (replicas need a resync), a slot held by another
 * session is worth waiting for, a refused login is the operator's to fix, and
 * a dropped connection is retried.
 */
import {
  GapError,
  SourceError,
  UnavailableError,
  isAuthenticationError,
  isInvalidatedSlot,
  isMissingSlot,
  isPrivilegeError,
  isSlotInUse,
  describeCause,
  isTransient,
} from '../../errors';
import { connectError } from '../../pg';
import { redactText } from '../../redact';

export function classifyReplicationError(source: string, url: string, err: unknown): Error {
  const message = (err as Error)?.message;
  const what = `source '${source}'`;
  if (isMissingSlot(err)) {
    return new GapError(`${what}: ${message}; the slot is gone: run pgferry up to recreate it and resync the replicas`, { cause: err });
  }
  if (isInvalidatedSlot(err)) {
    return new GapError(`${what}: ${message}; the slot lost WAL it needed: resync the replicas`, { cause: err });
  }
  if (isSlotInUse(err)) {
    return new UnavailableError(`${what}: ${message} (another capture still holds the slot; retrying until it lets go)`, { cause: err });
  }
  if (isPrivilegeError(err) || isAuthenticationError(err)) {
    return new SourceError(
      `${what}: ${redactText(describeCause(err), [url])}; the capture role needs the REPLICATION attribute and a pg_hba.conf entry for replication connections`,
      { cause: err },
    );
  }
  // No code at all (a dropped socket) or a transient one: a connection problem, named with its server.
  // A socket error with another code (ENOTFOUND…) is left as it is: capture retries it, as before.
  if (!(err as { code?: unknown })?.code || isTransient(err)) return connectError(what, url, err);
  return err as Error;
}
