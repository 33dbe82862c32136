import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import { cli, contentOf, createWorld, startUp, waitForEqual, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';
import { audit, AUDIT_SCHEMA, AUDIT_TABLES, Workload } from '../helpers/workload';

/**
 * Schema changes travel with the data, in both capture modes (WAL capture
 * with a FOR ALL TABLES publication, and trigger capture of all tables): while a
 * workload writes another table, the source runs ADD COLUMN (with a default
 * and NOT NULL), RENAME COLUMN, ALTER COLUMN TYPE (int → bigint,
 * varchar(10) → text), DROP COLUMN, RENAME TABLE, CREATE TABLE and an ALTER
 * with DML in the same transaction, each followed by rows that need it.
 * Replica a (schema_changes: apply) takes each change in its place and ends
 * equal to the source; replica b (schema_changes: stop) stops at each change
 * naming it and the statements to run; the operator runs them and resumes,
 * and b ends equal too. A column renamed keeps the values written before.
 * The audited workload (one keyless audit row per source transaction) runs
 * throughout: each replica holds every committed transaction exactly once.
 */
const SCHEMA = `
  CREATE TABLE items (id int PRIMARY KEY, code varchar(10), qty int, note text);
  CREATE TABLE busy (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), n int);
  ${AUDIT_SCHEMA}
`;

const ALL_STEPS: { ddl: string; then: string[] }[] = [
  { ddl: `ALTER TABLE items ADD COLUMN flag text NOT NULL DEFAULT 'old'`, then: [`INSERT INTO items (id, code, qty, note, flag) SELECT g, 'c' || g, g, 'n', 'new' FROM generate_series(101, 120) g`] },
  { ddl: `ALTER TABLE items RENAME COLUMN code TO sku`, then: [`UPDATE items SET sku = sku || '!' WHERE id % 10 = 0`, `INSERT INTO items (id, sku, qty, flag) VALUES (200, 'after', 1, 'x')`] },
  { ddl: `ALTER TABLE items ALTER COLUMN qty TYPE bigint, ALTER COLUMN sku TYPE text`, then: [`INSERT INTO items (id, sku, qty, flag) VALUES (201, 'a sku much longer than ten', 1099511627776, 'x')`] },
  { ddl: `ALTER TABLE items DROP COLUMN note`, then: [`UPDATE items SET qty = qty + 1 WHERE id <= 5`, `DELETE FROM items WHERE id = 7`] },
  { ddl: `ALTER TABLE items RENAME TO goods`, then: [`INSERT INTO goods (id, sku, qty, flag) VALUES (202, 'renamed', 2, 'x')`, `UPDATE goods SET flag = 'touched' WHERE id = 1`] },
  // A foreign key makes PostgreSQL report an ALTER TABLE of the new table too: it still arrives as a CREATE TABLE.
  { ddl: `CREATE TABLE fresh (id int PRIMARY KEY, v text NOT NULL, item int REFERENCES goods)`, then: [`INSERT INTO fresh SELECT g, 'v' || g, CASE WHEN g < 5 THEN g END FROM generate_series(1, 30) g`] },
  // The change and the rows that need it in one transaction: the rows come after it in the stream.
  { ddl: `BEGIN; ALTER TABLE goods ADD COLUMN extra int; UPDATE goods SET extra = id * 2 WHERE id > 100; COMMIT`, then: [] },
];
// Neither config names tables: WAL capture makes a FOR ALL TABLES publication, trigger capture puts its
// triggers on a table in the transaction that creates it (sql/migrations/schema-capture/0002).
const MODES = [
  { mode: 'wal', steps: ALL_STEPS, tables: ['goods', 'busy', 'fresh', ...AUDIT_TABLES] },
  { mode: 'trigger', steps: ALL_STEPS, tables: ['goods', 'busy', 'fresh', ...AUDIT_TABLES] },
];

describe.each(MODES)('schema changes under a running workload ($mode capture)', ({ mode, steps: STEPS, tables: TABLES }) => {
  let w: World;
  let up: Proc;
  let writing = true;
  let writer: Promise<void>;
  let load: Workload;

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a', 'b'], schema: SCHEMA });
    const configFile = path.join(w.dataDir, 'pgferry.yaml');
    fs.writeFileSync(
      configFile,
      `sources:
  - name: ${w.sourceName}
    url: ${w.sourceUrl}
    mode: ${mode}
replicas:
  - name: a
    url: ${w.replicaUrls.a}
  - name: b
    url: ${w.replicaUrls.b}
    schema_changes: stop
`,
    );
    up = await startUp(w, ['up', '--config', configFile]);
    load = new Workload(w.sourceUrl, 20);
    load.start();
    writer = w.source.withClient('app', async (c) => {
      for (let i = 0; writing; i++) {
        await c.query('INSERT INTO busy (n) VALUES ($1)', [i]);
        if (i % 5 === 0) await c.query('UPDATE busy SET n = n + 1 WHERE id = (SELECT max(id) FROM busy)');
        await new Promise((r) => setTimeout(r, 10));
      }
    });
  });

  afterAll(async () => {
    writing = false;
    await writer?.catch(() => undefined);
    await load?.stop().catch(() => undefined);
    await up?.stop();
    await w?.teardown();
  });

  it('applies each change in its place on a, stops b at each for the operator, and both end equal', async () => {
    await w.source.withClient('app', async (c) => {
      await c.query(`INSERT INTO items SELECT g, 'c' || g, g, 'note ' || g FROM generate_series(1, 50) g`);
      for (const s of STEPS) {
        await c.query(s.ddl);
        for (const q of s.then) await c.query(q);
      }
    });
    writing = false;
    await writer;
    await waitFor('the audited workload to commit 50 transactions', async () => load.committed >= 50, 30_000);
    const committed = await load.stop();

    await waitForEqual(w, 'a', TABLES).catch(async (err) => {
      const [src, dst] = await Promise.all([contentOf(w.source, 'app', TABLES), contentOf(w.replicas, 'replica_a', TABLES)]);
      console.log(up.output().split('\n').filter((l) => /schema change|refused|level":[45]0/.test(l)).map((l) => l.slice(0, 400)).join('\n'));
      const tail = await cli(w, ['tail', '--from', 'beginning', '--count', '400', '--tables', 'public.goods', '--json']);
      console.log(tail.stdout.split('\n').filter((l) => /"104"|schema/.test(l)).map((l) => l.slice(0, 700)).join('\n'), tail.stderr);
      for (const t of TABLES) console.log(t, 'only on source:', src[t].filter((r) => !dst[t].includes(r)).slice(0, 5), 'only on replica:', dst[t].filter((r) => !src[t].includes(r)).slice(0, 5));
      throw err;
    });
    // The renamed column kept what was written before the rename (and the rename itself is no drop + add).
    const a = await contentOf(w.replicas, 'replica_a', ['goods']);
    // id 3: written as code 'c3' before the rename, qty updated after the type change, flag the default existing rows got.
    expect(a.goods).toContain('(3,c3,4,old,)');
    expect(a.goods).toContain('(110,c110!,110,new,220)');
    expect(a.goods).toContain('(200,after,1,x,400)');
    const cols = await w.replicas.withClient('replica_a', async (c) =>
      (await c.query(`SELECT attname, format_type(atttypid, atttypmod) AS t, attnotnull FROM pg_attribute WHERE attrelid = 'goods'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`)).rows,
    );
    expect(cols).toEqual([
      { attname: 'id', t: 'integer', attnotnull: true },
      { attname: 'sku', t: 'text', attnotnull: false },
      { attname: 'qty', t: 'bigint', attnotnull: false },
      { attname: 'flag', t: 'text', attnotnull: true },
      { attname: 'extra', t: 'integer', attnotnull: false },
    ]);
    expect(up.output()).toMatch(/schema change applied/);

    // b stops at every change; the operator runs what the message says, then resumes.
    const stops: string[] = [];
    for (;;) {
      const state = await waitFor(
        'replica b to stop at a schema change or catch up',
        async () => {
          const v = JSON.parse((await cli(w, ['replica', 'status', 'b', '--json'])).stdout);
          if (v.state === 'failed') return v;
          const [src, dst] = await Promise.all([contentOf(w.source, 'app', TABLES), contentOf(w.replicas, 'replica_b', TABLES).catch(() => null)]);
          return JSON.stringify(src) === JSON.stringify(dst) ? v : null;
        },
        120_000,
      );
      if (state.state !== 'failed') break;
      expect(state.lastError).toMatch(/^replica 'b': schema change at source position \S+: (ALTER|CREATE) TABLE .*; the replica's schema_changes policy is stop: apply it to the replica by hand \(.*\), then run pgferry replica resume b$/);
      stops.push(state.lastError);
      const statements = /apply it to the replica by hand \((.*)\), then run pgferry replica resume b$/.exec(state.lastError)![1];
      await w.replicas.withClient('replica_b', (c) => c.query(statements));
      const resumed = await cli(w, ['replica', 'resume', 'b']);
      expect(resumed.code, resumed.stdout + resumed.stderr).toBe(0);
      expect(stops.length).toBeLessThanOrEqual(STEPS.length);
    }
    expect(stops).toHaveLength(STEPS.length);
    expect(stops[1]).toMatch(/rename column code to sku/);
    expect(stops[1]).toMatch(/ALTER TABLE "public"\."items" RENAME COLUMN "code" TO "sku"/);
    await waitForEqual(w, 'b', TABLES);
    await waitForEqual(w, 'a', TABLES);
    // Audit: every transaction of the workload that ran through all the changes, once, on both replicas.
    for (const db of ['replica_a', 'replica_b']) {
      await w.replicas.withClient(db, async (c) => expect(await audit(c), db).toEqual({ rows: committed, distinct: committed }));
    }
    console.log(`[${mode}] audit clean on a and b: ${committed} workload transactions each once, through ${STEPS.length} schema changes (b stopped at ${stops.length})`);
  });
});
