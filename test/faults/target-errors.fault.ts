import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, progressOf } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';
import { checkPrefix } from './harness/audit';
import { replicaStatus, Reported } from './harness/operator';
import { recordNotProduced, short } from './harness/rows';
import { settleReported } from './harness/settle';
import { FaultWorld } from './harness/system';
import { sourceAudit } from './harness/workload';

/**
 * Fault 14: the target refuses writes — a permission error and a full disk —
 * while the audit workload runs. Either must surface in `replica status`
 * (state `failed`, or `running` with the error being retried) within a
 * deadline, never as a silent hang; the other replica is unaffected; after
 * the operator's fix (GRANT back / space freed, and `replica resume` if it
 * failed) the replica converges with nothing lost or doubled.
 *
 * Permission: replica b connects as `ferry_b`, a role that is not a superuser
 * and owns none of the replicated tables: it has CONNECT and CREATE on its
 * database (for pgferry's own schema), USAGE on public and the DML privileges
 * on the tables. INSERT and UPDATE on `audit` are revoked mid-workload.
 *
 * Disk full: replica a's `events` table is moved to a tablespace on a tmpfs of
 * 4 MB, then the tmpfs is filled by a file but ~128 kB; the workload's events
 * fill the rest. Freeing it is the fix. Needs mount privileges (root here); if
 * the mount is refused, the row says so.
 */
const DEADLINE_MS = 60_000;
const ROLE = 'ferry_b';

describe('fault 14: permission and disk-full errors on a target', () => {
  let f: FaultWorld;
  let mountDir: string | null = null;

  beforeAll(async () => {
    f = await FaultWorld.create();
    await f.w.replicas.withClient('postgres', (c) => c.query(`CREATE ROLE ${ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE`));
    await f.w.replicas.withClient('replica_b', (c) =>
      c.query(`
        GRANT CONNECT, CREATE ON DATABASE replica_b TO ${ROLE};
        GRANT USAGE ON SCHEMA public TO ${ROLE};
        GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO ${ROLE};
        GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO ${ROLE};
      `),
    );
    f.w.replicaUrls.b = f.w.replicas.url('replica_b', ROLE); // what upArgs gives the apply process
    await f.start();
  });

  afterAll(async () => {
    try {
      await f?.teardown();
    } finally {
      if (mountDir) {
        try {
          execFileSync('umount', [mountDir]);
          fs.rmdirSync(mountDir);
        } catch {
          /* reported by the run, nothing to clean further */
        }
      }
    }
  });

  /** Wait until the replica reports the error, as a failure or as a retry in progress. */
  const reported = (name: string, pattern: RegExp) =>
    waitFor(`replica '${name}' to report ${pattern}`, async () => {
      const s = await replicaStatus(f, name);
      const text = `${s.v.lastError ?? ''} ${s.v.retrying ?? ''}`;
      return pattern.test(text) ? s : null;
    }, DEADLINE_MS, 500) as Promise<Reported>;

  it('permission: INSERT/UPDATE revoked from b\'s role → reported with the message; a unaffected; exact after GRANT (+ resume)', async () => {
    const owner = await f.w.replicas.withClient('replica_b', async (c) => (await c.query(`SELECT tableowner FROM pg_tables WHERE tablename = 'audit'`)).rows[0].tableowner);
    expect(owner).not.toBe(ROLE);
    const before = new Set((await sourceAudit(f)).keys());
    const load = f.load();
    await f.more(load, 200);
    await f.applied('b', 100);
    await f.w.replicas.withClient('replica_b', (c) => c.query(`REVOKE INSERT, UPDATE ON audit FROM ${ROLE}`));
    const t0 = Date.now();

    const s = await reported('b', /permission denied for table audit/);
    const reportedIn = (Date.now() - t0) / 1000;
    const plain = (e: string | null) => short((e ?? '').replace(/ key \{[^}]*\} at source position \S+/, ''), 200);
    const how = s.v.state === 'failed' ? `failed: "${plain(s.v.lastError)}"` : `${s.v.state}, retrying: "${plain(s.v.retrying)}"`;
    expect(['failed', 'running']).toContain(s.v.state);
    if (s.v.state === 'failed') expect(s.code).toBe(1);
    const prefix = await checkPrefix(f, 'b', before);
    expect(prefix, 'b holds a gap-free prefix').toMatchObject({ holes: 0, foreign: 0, duplicated: 0 });

    const aBefore = Number((await progressOf(f.w, 'a')).txns_applied);
    await f.more(load, 200);
    await f.applied('a', aBefore + 100);
    expect((await replicaStatus(f, 'a')).v.state).toBe('running');

    await f.w.replicas.withClient('replica_b', (c) => c.query(`GRANT INSERT, UPDATE ON audit TO ${ROLE}`));
    const fixedAt = Date.now();
    if (s.v.state === 'failed') expect((await cli(f.w, ['replica', 'resume', 'b'])).code).toBe(0);
    await f.more(load, 200);

    await settleReported(f, load, {
      n: 14,
      fault: `permission denied on the target (REVOKE INSERT, UPDATE ON audit from b's role ${ROLE})`,
      t0: fixedAt,
      outcome:
        `b reported in ${reportedIn.toFixed(1)} s (deadline ${DEADLINE_MS / 1000} s) ${how}, keeping a gap-free prefix (${prefix.held} txns); a running throughout; ` +
        `after GRANT${s.v.state === 'failed' ? ' + replica resume b' : ' (retried by itself)'} (converged s counted from the fix)`,
    });
  });

  it('disk full: a tablespace on a filled tmpfs → reported with the message; b unaffected; exact after space is freed', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgferry-tiny-'));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4M', 'tmpfs', dir], { stdio: 'pipe' });
    } catch (err) {
      fs.rmdirSync(dir);
      const why = String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim();
      recordNotProduced(14, 'disk full on the target', `mounting a 4 MB tmpfs for a tablespace was refused here (${short(why, 120)}); the permission row above stands for target write errors`);
      return;
    }
    mountDir = dir;
    execFileSync('chown', ['postgres:postgres', dir]);
    await f.w.replicas.withClient('postgres', (c) => c.query(`CREATE TABLESPACE tiny LOCATION '${dir}'`));
    await f.w.replicas.withClient('replica_a', (c) => c.query('ALTER TABLE events SET TABLESPACE tiny'));
    // Leave ~128 kB: the workload's events fill it within seconds.
    const st = fs.statfsSync(dir);
    const filler = path.join(dir, 'filler');
    fs.writeFileSync(filler, Buffer.alloc(Math.max(0, st.bavail * st.bsize - 128 * 1024)));

    const load = f.load();
    const t0 = Date.now();
    const s = await reported('a', /No space left on device/);
    const reportedIn = (Date.now() - t0) / 1000;
    const how = s.v.state === 'failed' ? `failed: "${short(s.v.lastError, 200)}"` : `${s.v.state}, retrying: "${short(s.v.retrying, 200)}"`;
    expect(['failed', 'running']).toContain(s.v.state);
    // Still so a while later: retried with backoff (or stopped), not hung and not skipped.
    const bBefore = Number((await progressOf(f.w, 'b')).txns_applied);
    await f.more(load, 200);
    await f.applied('b', bBefore + 100);
    expect((await replicaStatus(f, 'b')).v.state).toBe('running');
    const still = await replicaStatus(f, 'a');
    expect(`${still.v.lastError ?? ''} ${still.v.retrying ?? ''}`).toMatch(/No space left on device/);

    fs.rmSync(filler);
    const fixedAt = Date.now();
    if (s.v.state === 'failed') expect((await cli(f.w, ['replica', 'resume', 'a'])).code).toBe(0);
    await f.more(load, 200);

    await settleReported(f, load, {
      n: 14,
      fault: 'disk full on the target (replica a\'s events in a tablespace on a full 4 MB tmpfs)',
      t0: fixedAt,
      outcome:
        `a reported ${reportedIn.toFixed(1)} s after the workload began filling the last 128 kB (deadline ${DEADLINE_MS / 1000} s): ${how}, still so 200 txns later; b running throughout; ` +
        `after the filler file was removed${s.v.state === 'failed' ? ' + replica resume a' : ', a retried by itself'} (converged s counted from the fix)`,
    });
  });
});
