import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import type { Proc } from '../helpers/procs';
import { runCli, startCli } from '../helpers/procs';
import { contentOf, createWorld, fingerprint, startUp, upArgs, waitForEqual, World } from '../helpers/fixture';
import { audit, AUDIT_SCHEMA, AUDIT_TABLES, Workload } from '../helpers/workload';
import { waitFor } from '../helpers/wait';

/**
 * A replica added to a source that already holds data: `replica add
 * --snapshot --create-tables` copies 1,000,000+ rows from a snapshot while a
 * write workload runs, then the replica catches up from the stream. Nothing
 * written during the copy is lost or applied twice.
 */
const BIG_ROWS = Number(process.env.PGFERRY_SNAPSHOT_ROWS ?? 1_000_000);
const SCHEMA = `
  ${AUDIT_SCHEMA}
  CREATE TYPE tier AS ENUM ('free', 'pro');
  CREATE TABLE customers (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, tier tier NOT NULL DEFAULT 'free', born date);
  CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL, amount numeric(12,2), status text, payload jsonb,
                       created_at timestamptz NOT NULL DEFAULT now(), total numeric GENERATED ALWAYS AS (amount * 2) STORED);
`;
const BIG_TABLES = ['customers', 'orders'];

describe('replica add --snapshot', () => {
  let w: World;
  let up: Proc | undefined;

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a'], schema: SCHEMA });
    await w.source.withClient('app', async (c) => {
      await c.query(`INSERT INTO customers (name, tier, born) SELECT 'c' || g, (ARRAY['free','pro']::tier[])[1 + g % 2], DATE '1970-01-01' + g % 20000
                     FROM generate_series(1, $1::int) g`, [BIG_ROWS * 0.4]);
      await c.query(`INSERT INTO orders (customer_id, amount, status, payload)
                     SELECT 1 + g % 1000, (g % 100000) / 100.0, 'new', jsonb_build_object('g', g, 'tags', jsonb_build_array('x', g % 7))
                     FROM generate_series(1, $1::int) g`, [BIG_ROWS * 0.6]);
      await c.query('ANALYZE');
    });
    up = await startUp(w);
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  it('copies the source under a write workload, then catches up: equal content, no transaction lost or doubled', async () => {
    // The replica database exists but has no tables: --create-tables makes them (the enum type it needs is there).
    const lateUrl = await w.replicas.createDatabase('replica_late');
    await w.replicas.withClient('replica_late', (c) => c.query(`CREATE TYPE tier AS ENUM ('free', 'pro')`));

    const workload = new Workload(w.sourceUrl);
    workload.start();
    await waitFor('the workload to be under way', async () => workload.committed > 50);

    const args = ['replica', 'add', 'late', '--snapshot', '--create-tables', '--source', w.sourceUrl, '--replica', `late=${lateUrl}`];
    const add = await runCli(args, w.env, 600_000);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    expect(add.stdout).toMatch(/replica 'late': created public\.audit, public\.counters, public\.customers, public\.events, public\.orders/);
    expect(add.stdout).toMatch(/snapshot of source '\w+' at [0-9A-F]+\/[0-9A-F]+: copied 5 table\(s\), 4 at a time \(workflow pgferry-snapshot-late\)/);
    expect(add.stdout).toMatch(/copy \|.*\| \d+% · \d+ rows · [\d.]+ MB · \d+ rows\/s · ETA \S+ · tables \d\/5/); // progress, as it goes
    const copied = /copied (\d+) rows/.exec(add.stdout);
    expect(Number(copied?.[1])).toBeGreaterThanOrEqual(BIG_ROWS);
    console.log(add.stdout.split('\n').filter((l) => /copied|snapshot of/.test(l)).join('\n'));
    // The copy ran as a Temporal workflow: its record stays, with the result.
    const connection = await Connection.connect({ address: w.temporal.address });
    try {
      const handle = new Client({ connection }).workflow.getHandle('pgferry-snapshot-late');
      expect((await handle.describe()).status.name).toBe('COMPLETED');
      expect((await handle.result()).rows).toBe(Number(copied![1]));
    } finally {
      await connection.close();
    }

    // Running it again must not copy over a replica that is already filled.
    const again = await runCli(args, w.env);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain(`pgferry: replica 'late' already replicates source '${w.sourceName}'`);

    // The operator adds the replica to pgferry up; the workload keeps writing throughout.
    await up!.stop();
    w.replicaUrls.late = lateUrl;
    up = await startUp(w, upArgs(w));
    const atRestart = workload.committed;
    await waitFor('more writes after the restart', async () => workload.committed > atRestart + 100);
    const committed = await workload.stop();

    await waitForEqual(w, 'late', AUDIT_TABLES, 180_000);
    for (const t of BIG_TABLES) expect(await fingerprint(w.replicas, 'replica_late', t), t).toEqual(await fingerprint(w.source, 'app', t));
    await w.replicas.withClient('replica_late', async (c) => expect(await audit(c)).toEqual({ rows: committed, distinct: committed }));
    // The replica that ran all along agrees too.
    await waitForEqual(w, 'a', AUDIT_TABLES);
    expect((await contentOf(w.replicas, 'replica_late', ['counters'])).counters).toEqual((await contentOf(w.source, 'app', ['counters'])).counters);
  });

  it('refuses tables that already hold rows, naming them, before copying anything', async () => {
    const url = await w.replicas.createDatabase('replica_busy');
    await w.replicas.withClient('replica_busy', (c) => c.query(`${SCHEMA}`)); // AUDIT_SCHEMA fills counters
    const r = await runCli(['replica', 'add', 'busy', '--snapshot', '--source', w.sourceUrl, '--replica', `busy=${url}`], w.env);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`pgferry: replica 'busy': table public.counters already holds rows; a snapshot fills empty tables only`);
    expect((await contentOf(w.replicas, 'replica_busy', ['orders'])).orders).toEqual([]);
  });

  it('survives its own process being killed mid-copy: run again, it re-attaches and copies from the start', async () => {
    const url = await w.replicas.createDatabase('replica_again');
    await w.replicas.withClient('replica_again', (c) => c.query(`CREATE TYPE tier AS ENUM ('free', 'pro')`));
    const args = ['replica', 'add', 'again', '--snapshot', '--create-tables', '--parallel', '1', '--source', w.sourceUrl, '--replica', `again=${url}`];
    const first = startCli(args, w.env);
    await waitFor('the copy to be under way', async () => {
      if (first.child.exitCode !== null) throw new Error(`add exited early:\n${first.output()}`);
      return /copy \|.*· [1-9]\d* rows/.test(first.output());
    }, 120_000, 100);
    await first.kill9();
    const partial = await w.replicas.withClient('replica_again', async (c) => Number((await c.query('SELECT count(*) FROM customers')).rows[0].count));

    const second = await runCli(args, w.env, 600_000);
    expect(second.code, second.stdout + second.stderr).toBe(0);
    for (const t of [...BIG_TABLES, ...AUDIT_TABLES]) {
      expect(await fingerprint(w.replicas, 'replica_again', t), t).toEqual(await fingerprint(w.source, 'app', t));
    }
    console.log(`killed mid-copy (customers had ${partial} committed rows), re-run: ${second.stdout.split('\n').find((l) => l.includes('copied') && l.includes('rows'))}`);
  });
});
