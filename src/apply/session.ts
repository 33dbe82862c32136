/**
 * Apply sessions like PostgreSQL's own apply worker: with
 * `session_replication_role = replica`, so the replica's ordinary triggers
 * and its foreign-key (RI) triggers do not fire on replicated rows — the
 * source already ran its own, and a replica trigger that writes elsewhere or
 * an FK checked mid-batch would make the replica differ from the source or
 * refuse rows the source holds. Triggers the DBA marks ENABLE ALWAYS (or
 * ENABLE REPLICA) still fire, as they do for native subscribers. CHECK, NOT
 * NULL and unique constraints are not triggers: they are enforced as before.
 *
 * The setting needs a superuser, or (PostgreSQL 15+) `GRANT SET ON PARAMETER
 * session_replication_role`. Without it, apply runs with the default role
 * (`origin`) and says so once per replica start (prepareReplica), with the
 * grant that enables it.
 *
 * And with `synchronous_commit = off`, as native subscriptions default to: a
 * batch's COMMIT does not wait for its WAL flush. This loses nothing: data
 * and checkpoint are one transaction, so a replica that crashes comes back at
 * an earlier batch boundary, as one whole, and applies the rest again from
 * the stream.
 */
import type pg from 'pg';
import { isPrivilegeError } from '../errors';

/** Per connection: whether it runs with session_replication_role = replica (set once, outside any transaction). */
const asReplica = new WeakMap<pg.ClientBase, boolean>();

/** Put the session in replica role if the role may; false when it may not. Call outside a transaction. */
export async function useReplicaRole(c: pg.ClientBase): Promise<boolean> {
  const known = asReplica.get(c);
  if (known !== undefined) return known;
  try {
    await c.query('SET session_replication_role = replica');
    asReplica.set(c, true);
    return true;
  } catch (err) {
    if (!isPrivilegeError(err)) throw err;
    asReplica.set(c, false);
    return false;
  }
}

/** Commits of apply batches do not wait for the WAL flush (see above). Call outside a transaction. */
export async function useAsyncCommit(c: pg.ClientBase): Promise<void> {
  await c.query('SET synchronous_commit = off');
}

/** What to say once when the replica's role may not apply in replica role. */
export async function replicaRoleAdvice(c: pg.ClientBase, replica: string): Promise<string> {
  const role = (await c.query('SELECT current_user AS u')).rows[0].u as string;
  return (
    `replica '${replica}': apply runs with session_replication_role = origin, because role ${role} may not set it: the replica's own triggers ` +
    `and foreign-key checks fire on replicated rows (native logical replication skips them). To apply as PostgreSQL's apply worker does, ` +
    `run as a superuser: GRANT SET ON PARAMETER session_replication_role TO ${JSON.stringify(role)}`
  );
}
