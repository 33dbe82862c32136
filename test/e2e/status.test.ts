import * as fs from 'node:fs';
import * as path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import { runCli, startCli } from '../helpers/procs';
import { createWorld, startUp, waitForEqual, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';

/**
 * `pgferry status` against a running system configured by a pgferry.yaml:
 * one healthy, one paused and one failed replica; the JSON shape scripts
 * rely on, and the exit code (1 while any replica is failed).
 */
const SCHEMA = `CREATE TABLE orders (id int PRIMARY KEY, amount numeric NOT NULL)`;

describe('pgferry status', () => {
  let w: World;
  let up: Proc;
  let configFile: string;
  const status = (extra: string[] = [], env: NodeJS.ProcessEnv = {}) => runCli(['--config', configFile, 'status', ...extra], { ...w.env, ...env });

  beforeAll(async () => {
    w = await createWorld({ replicas: ['healthy', 'held', 'broken'], schema: SCHEMA });
    await w.replicas.withClient('replica_broken', (c) => c.query('ALTER TABLE orders ADD CONSTRAINT positive CHECK (amount >= 0)'));
    configFile = path.join(w.dataDir, 'pgferry.yaml');
    // Secrets come from the environment; the world's env names the source too, so the file's single source is chosen.
    fs.writeFileSync(
      configFile,
      [
        'sources:',
        `  - name: ${w.sourceName}`,
        '    url: ${STATUS_TEST_SOURCE}',
        '    heartbeat_seconds: 5',
        'replicas:',
        ...Object.entries(w.replicaUrls).map(([n, u]) => `  - { name: ${n}, url: "${u}" }`),
        '',
      ].join('\n'),
    );
    w.env.STATUS_TEST_SOURCE = w.sourceUrl;
    up = await startUp(w, ['up', '--config', configFile]);
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  it('reports every part with exit 0 when all is well, and exit 1 with the reason when a replica failed', async () => {
    await w.source.withClient('app', (c) => c.query('INSERT INTO orders SELECT g, g FROM generate_series(1, 100) g'));
    await Promise.all(['healthy', 'held', 'broken'].map((r) => waitForEqual(w, r, ['orders'])));
    const healthy = await waitFor('status to show all three replicas running', async () => {
      const r = await status(['--json']);
      const report = JSON.parse(r.stdout);
      return report.replicas?.length === 3 && report.replicas.every((v: { state: string }) => v.state === 'running') ? { r, report } : null;
    });
    expect(healthy.r.code).toBe(0);
    expect(healthy.report.ok).toBe(true);
    const src = healthy.report.sources[0];
    expect(src).toMatchObject({ source: w.sourceName, state: 'running', error: null });
    expect(src.slot).toMatchObject({ slot: `pgferry_${w.sourceName}`, exists: true, active: true });
    expect(src.slot.retainedBytes).toBeGreaterThanOrEqual(0);
    expect(src.slot.warning).toBeNull();
    expect(src.stream.last.offset).toBeGreaterThanOrEqual(0);

    // Pause one, make another reject a row.
    expect((await runCli(['--config', configFile, 'replica', 'pause', 'held'], w.env)).code).toBe(0);
    await waitFor('held to be paused', async () => JSON.parse((await status(['--json'])).stdout).replicas.find((v: { replica: string }) => v.replica === 'held')?.state === 'paused');
    await w.source.withClient('app', (c) => c.query('INSERT INTO orders VALUES (101, -1), (102, 5)'));
    await waitForEqual(w, 'healthy', ['orders']);
    const bad = await waitFor('status to show broken failed and held behind', async () => {
      const r = await status(['--json']);
      const report = JSON.parse(r.stdout);
      const by = Object.fromEntries(report.replicas.map((v: { replica: string }) => [v.replica, v]));
      return by.broken?.state === 'failed' && by.held?.lagBytes > 0 ? { r, report, by } : null;
    });
    expect(bad.r.code).toBe(1);
    expect(bad.report.ok).toBe(false);
    expect(bad.by.healthy).toMatchObject({ state: 'running', lagBytes: 0, lastError: null, txns: 2 });
    expect(bad.by.held).toMatchObject({ state: 'paused', lastError: null, txns: 1 });
    expect(bad.by.broken.lastError).toMatch(/insert on public\.orders key \{"id":"101"\}.*violates check constraint "positive"/);
    for (const v of bad.report.replicas) {
      for (const key of ['replica', 'source', 'state', 'appliedLsn', 'offset', 'lagBytes', 'lagSeconds', 'rowsPerSecond', 'txns', 'changes', 'lastError']) expect(v).toHaveProperty(key);
    }
    expect(bad.report.warnings.join('\n')).toMatch(/replica 'broken' is failed/);

    const human = await status();
    expect(human.code).toBe(1);
    expect(human.stdout).toMatch(/^SOURCE\s+CAPTURE\s+CONFIRMED\s+SLOT RETAINS/);
    expect(human.stdout).toMatch(/\nREPLICA\s+STATE\s+APPLIED/);
    expect(human.stdout).toMatch(/broken\s+failed/);
    expect(human.stdout).toMatch(/held\s+paused/);

    // A slot holding more WAL than the threshold is a warning, in JSON and on screen.
    const warned = JSON.parse((await status(['--json'], { PGFERRY_SLOT_WARN_BYTES: '0' })).stdout);
    expect(warned.sources[0].slot.warning).toMatch(new RegExp(`source '${w.sourceName}': slot pgferry_${w.sourceName} holds back .* of WAL \\(threshold 0\\.0 kiB\\)`));

    // Fix and resume both: exit 0 again.
    await w.replicas.withClient('replica_broken', (c) => c.query('ALTER TABLE orders DROP CONSTRAINT positive'));
    for (const r of ['held', 'broken']) expect((await runCli(['--config', configFile, 'replica', 'resume', r], w.env)).code).toBe(0);
    await Promise.all(['held', 'broken'].map((r) => waitForEqual(w, r, ['orders'])));
    const fixed = await waitFor('status to be all running again', async () => {
      const r = await status(['--json']);
      return r.code === 0 ? JSON.parse(r.stdout) : null;
    });
    expect(fixed.replicas.map((v: { state: string }) => v.state)).toEqual(['running', 'running', 'running']);
  });

  it('shows a replica whose checkpoint row another session holds as retrying, naming the cause, and it catches up once that session ends', async () => {
    // A transaction left open on the replica holding the checkpoint row: before, the batch waited on it
    // forever while its heartbeat said "running"; now the wait is bounded and reported.
    const holder = new pg.Client({ connectionString: w.replicaUrls.healthy });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM pgferry.progress WHERE replica = 'healthy' FOR UPDATE`);
      await w.source.withClient('app', (c) => c.query('INSERT INTO orders SELECT g, g FROM generate_series(1001, 1100) g'));
      const v = await waitFor(
        'status to show healthy retrying on its locked checkpoint',
        async () => {
          const report = JSON.parse((await status(['--json'])).stdout);
          const h = report.replicas.find((x: { replica: string }) => x.replica === 'healthy');
          return h?.retrying ? h : null;
        },
        150_000,
        1000,
      );
      expect(v.state).toBe('running');
      expect(v.retrying).toContain(`replica 'healthy': its checkpoint row in pgferry.progress has been locked by another session for 30 s`);
      expect(v.retrying).toContain('pg_blocking_pids');
      const human = await status();
      expect(human.stdout).toMatch(/healthy\s+running\s.*retrying: replica 'healthy': its checkpoint row/);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await holder.end().catch(() => undefined);
    }
    await waitForEqual(w, 'healthy', ['orders']);
  });

  it('--watch refreshes until stopped', async () => {
    const watch = startCli(['--config', configFile, 'status', '--watch', '1', '--json'], w.env);
    try {
      // One JSON report per line (the log, on stderr, may be interleaved in output(): keep report lines).
      const reports = await waitFor('two reports from status --watch', () => {
        const lines = watch.output().split('\n').filter((l) => l.startsWith('{"ok"'));
        return lines.length >= 2 ? lines.map((l) => JSON.parse(l)) : null;
      }, 60_000, 200);
      expect(reports[1].at > reports[0].at).toBe(true);
      expect(reports[1].replicas).toHaveLength(3);
    } finally {
      await watch.stop();
    }
  });
});
