import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import { runCli } from '../helpers/procs';
import { contentOf, createWorld, startUp, waitForEqual, World } from '../helpers/fixture';

/**
 * `pgferry up --config pgferry.yaml`: the source's `exclude` list keeps a
 * table out of the publication, and a replica's `tables` limits what is
 * applied to it (that replica does not even have the other table), and what
 * `verify` compares.
 */
const SCHEMA = `
  CREATE TABLE orders (id int PRIMARY KEY, amount numeric NOT NULL);
  CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
  CREATE TABLE audit_log (id bigserial PRIMARY KEY, what text);
`;

describe('a config file with table selections', () => {
  let w: World;
  let up: Proc;
  let configFile: string;

  beforeAll(async () => {
    w = await createWorld({ replicas: ['full', 'part'], schema: SCHEMA });
    await w.replicas.withClient('replica_part', (c) => c.query('DROP TABLE customers, audit_log'));
    configFile = path.join(w.dataDir, 'pgferry.yaml');
    fs.writeFileSync(
      configFile,
      `sources:
  - name: ${w.sourceName}
    url: \${CONFIG_TEST_SOURCE}
    exclude: [public.audit_log]
replicas:
  - name: full
    url: ${w.replicaUrls.full}
  - name: part
    url: ${w.replicaUrls.part}
    tables: [orders]
`,
    );
    w.env.CONFIG_TEST_SOURCE = w.sourceUrl;
    up = await startUp(w, ['up', '--config', configFile]);
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  it('replicates what each part of the file selects, and verify compares the same', async () => {
    expect(up.output()).toMatch(/2 table\(s\) published/);
    await w.source.withClient('app', async (c) => {
      await c.query(`INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 20) g`);
      await c.query(`INSERT INTO orders SELECT g, g FROM generate_series(1, 50) g`);
      await c.query(`INSERT INTO audit_log (what) SELECT 'x' FROM generate_series(1, 10)`);
      await c.query(`BEGIN; UPDATE orders SET amount = amount + 1 WHERE id <= 10; DELETE FROM customers WHERE id > 15; TRUNCATE orders, customers; INSERT INTO orders VALUES (1, 1); INSERT INTO customers VALUES (1, 'one'); COMMIT`);
    });
    await waitForEqual(w, 'full', ['orders', 'customers']);
    await waitForEqual(w, 'part', ['orders']);
    expect((await contentOf(w.replicas, 'replica_full', ['audit_log'])).audit_log).toEqual([]);
    const pub = await w.source.withClient('app', async (c) => (await c.query(`SELECT tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`, [`pgferry_${w.sourceName}`])).rows.map((r) => r.tablename));
    expect(pub).toEqual(['customers', 'orders']);

    // A changed table selection changes the publication (and back); an unchanged one leaves it alone.
    const published = () => w.source.withClient('app', async (c) => (await c.query(`SELECT tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`, [`pgferry_${w.sourceName}`])).rows.map((r) => r.tablename));
    const wider = await runCli(['--config', configFile, 'init', '--tables', 'orders,customers,audit_log'], w.env);
    expect(wider.code, wider.stdout + wider.stderr).toBe(0);
    expect(await published()).toEqual(['audit_log', 'customers', 'orders']);
    expect((await runCli(['--config', configFile, 'init'], w.env)).code).toBe(0);
    expect(await published()).toEqual(['customers', 'orders']);

    for (const replica of ['full', 'part']) {
      const r = await runCli(['--config', configFile, 'verify', replica, '--json'], w.env);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const tables = JSON.parse(r.stdout).tables.map((t: { table: string }) => t.table);
      expect(tables).toEqual(replica === 'full' ? ['public.customers', 'public.orders'] : ['public.orders']);
    }
  });
});
