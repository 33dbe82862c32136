import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import type { Proc } from '../helpers/procs';
import { cli, contentOf, createWorld, deleteStream, startUp, waitForEqual, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';

/**
 * Hostile identifiers and values, end to end: schemas, tables, columns and a
 * type whose names hold double and single quotes, spaces, semicolons,
 * backslashes, dots, commas, unicode and SQL keywords, selected with
 * `--tables` (quoted as SQL writes them, commas and dots inside the quotes),
 * replicated through inserts (one by one, grouped, and by COPY), updates
 * (of the key too), deletes and TRUNCATE, copied by `replica add --snapshot
 * --create-tables`, and compared by `verify`; values that look like SQL (or
 * like COPY's end-of-data marker) arrive as they were. A canary table
 * `victim`, named in every injection attempt, must be untouched everywhere.
 * (fidelity.test.ts covers a first hostile table through WAL apply.)
 */
const S1 = `"we""ird; DROP"`; // schema: we"ird; DROP
const S2 = `"sch.ema, ok"`; // schema: a dot, a comma and a space
const T1 = `${S1}."Ta""ble 'x'"`;
const T2 = `${S2}."ta.ble, too; DROP TABLE victim; --"`;
const T3 = `${S1}."nokey ""full"""`;
const MOOD = `${S1}."mo""od"`;
const TYPE_SQL = `CREATE SCHEMA ${S1}; CREATE SCHEMA ${S2}; CREATE TYPE ${MOOD} AS ENUM ('it''s', 'say "hi"', 'back\\slash');`;
const SCHEMA = `
  ${TYPE_SQL}
  CREATE TABLE victim (id int PRIMARY KEY);
  INSERT INTO victim VALUES (1);
  CREATE TABLE ${T1} (
    "co;l""umn" int,
    "select" text,
    "a b" text,
    "back\\slash" text,
    "dot.ted" numeric(10,2),
    "ünï©ødé 日本" text,
    "'); DROP TABLE victim; --" text,
    "$1" ${MOOD},
    "Mixed" int[],
    PRIMARY KEY ("co;l""umn", "select")
  );
  CREATE TABLE ${T2} (id serial PRIMARY KEY, "from" text, "x""y" jsonb DEFAULT '{"a": "b''c"}', "where" text NOT NULL DEFAULT 'it''s; DROP TABLE victim');
  CREATE TABLE ${T3} ("order" int, "group" text);
  ALTER TABLE ${T3} REPLICA IDENTITY FULL;
  CREATE TABLE public.plain (id int PRIMARY KEY);
`;
const TABLES = [T1, T2, T3];
/** As an operator types it: SQL-quoted names, commas and dots inside the quotes. */
const TABLES_FLAG = TABLES.join(',');
/** Values that look like SQL, like parameters, like COPY's escapes and end-of-data marker. */
const NASTY = [
  `'); DROP TABLE victim; --`,
  `"; DELETE FROM victim; --`,
  `$1`,
  `\\.`,
  `a\tb\nc\\N`,
  `\\x00 %s %d \${x} {{1}}`,
  `E'\\\\'`,
  `ünï©ødé 日本 🚢`,
  ``,
  `NULL`,
];

describe('hostile identifiers and values', () => {
  let w: World;
  let up: Proc;
  let configFile: string;
  let trigger: Proc | undefined;
  const triggerSource = `trg${Math.random().toString(36).slice(2, 8)}`;
  const src = (sql: string, values?: unknown[]) => w.source.withClient('app', (c) => c.query(sql, values));
  const insertT1 = (k: number, v: string) =>
    src(
      `INSERT INTO ${T1} ("co;l""umn", "select", "a b", "back\\slash", "dot.ted", "ünï©ødé 日本", "'); DROP TABLE victim; --", "$1", "Mixed")
       VALUES ($1, $2, $2, $2, $3, $2, $2, $4, $5)`,
      [k, v, (k * 1.25).toFixed(2), ['it\'s', 'say "hi"', 'back\\slash'][k % 3], `{${k},NULL,${-k}}`],
    );

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a', 'b'], schema: SCHEMA });
    // Replica b takes one hostile table, named in the config file (JSON strings are YAML too).
    configFile = path.join(w.dataDir, 'pgferry.yaml');
    fs.writeFileSync(
      configFile,
      [
        'sources:',
        `  - name: ${w.sourceName}`,
        `    url: ${JSON.stringify(w.sourceUrl)}`,
        'replicas:',
        `  - { name: a, url: ${JSON.stringify(w.replicaUrls.a)} }`,
        `  - { name: b, url: ${JSON.stringify(w.replicaUrls.b)}, tables: ${JSON.stringify([T1])} }`,
        '',
      ].join('\n'),
    );
    up = await startUp(w, ['up', '--config', configFile, '--tables', TABLES_FLAG]);
  });

  afterAll(async () => {
    await up?.stop();
    await trigger?.stop();
    await deleteStream(triggerSource).catch(() => undefined);
    await w?.teardown();
  });

  it('replicates inserts, updates, deletes and TRUNCATE of hostile tables selected with --tables', async () => {
    expect(up.output()).toContain('3 table(s) published');
    // one by one (grouped into apply_statements on the replica)
    for (let i = 0; i < NASTY.length; i++) await insertT1(i, NASTY[i]);
    // a long run in one transaction: applied by COPY
    await src(
      `INSERT INTO ${T1} SELECT g, ($1::text[])[1 + g % $2] || g, 'x', '\\', g / 3.0, '日本', ($1::text[])[1 + g % $2], 'it''s', ARRAY[g] FROM generate_series(100, 1100) g`,
      [NASTY, NASTY.length],
    );
    await src(`INSERT INTO ${T2} ("from") SELECT unnest($1::text[])`, [NASTY]);
    await src(`INSERT INTO ${T2} ("from", "x""y", "where") VALUES ($1, $2, $1)`, [NASTY[0], JSON.stringify({ [NASTY[1]]: NASTY[0], '\\': [NASTY[3]] })]);
    await src(`INSERT INTO ${T3} SELECT g % 3, unnest($1::text[]) FROM generate_series(1, 2) g`, [NASTY]);
    await src(`INSERT INTO public.plain VALUES (1)`); // not selected: never replicated
    await waitForEqual(w, 'a', TABLES);

    // updates, the key included; deletes; TRUNCATE; all in a few transactions
    await src(`UPDATE ${T1} SET "select" = "select" || ' -- upd''d', "a b" = $1 WHERE "co;l""umn" % 4 = 0`, [NASTY[1]]);
    await src(`UPDATE ${T1} SET "co;l""umn" = "co;l""umn" + 100000, "$1" = 'say "hi"' WHERE "co;l""umn" % 7 = 0`);
    await src(`DELETE FROM ${T1} WHERE "co;l""umn" % 5 = 0 OR "select" = $1`, [NASTY[2]]);
    await src(`UPDATE ${T2} SET "x""y" = "x""y" || '{"k": "''; --"}', "from" = NULL WHERE id % 2 = 0`);
    await src(`UPDATE ${T3} SET "group" = $1 WHERE "order" = 1`, [NASTY[0]]);
    await src(`DELETE FROM ${T3} WHERE "order" = 2`);
    await Promise.all([waitForEqual(w, 'a', TABLES), waitForEqual(w, 'b', [T1])]);
    await w.source.withClient('app', async (c) => {
      await c.query('BEGIN');
      await c.query(`INSERT INTO ${T3} VALUES (9, 'before')`);
      await c.query(`TRUNCATE ${T3}, ${T2} RESTART IDENTITY`);
      await c.query(`INSERT INTO ${T2} ("from") VALUES ($1)`, [NASTY[0]]);
      await c.query('COMMIT');
    });
    await waitForEqual(w, 'a', TABLES);

    await waitForEqual(w, 'b', [T1]);
    const b = await contentOf(w.replicas, 'replica_b', [T2, T3]);
    expect(b).toEqual({ [T2]: [], [T3]: [] }); // not b's tables
    const a = await contentOf(w.replicas, 'replica_a', [...TABLES, 'victim', 'public.plain']);
    expect(a[T3]).toEqual([]);
    expect(a[T2]).toHaveLength(1);
    expect(a['public.plain']).toEqual([]);
    expect(a.victim).toEqual(['(1)']);
    expect(a[T1].length).toBeGreaterThan(700);
    // The values arrived as they were written (not only equal as row text).
    const column = `SELECT "'); DROP TABLE victim; --" AS v FROM ${T1} ORDER BY "co;l""umn", "select"`;
    const back = await w.replicas.withClient('replica_a', async (c) => (await c.query(column)).rows.map((r) => r.v));
    expect(back).toEqual(await w.source.withClient('app', async (c) => (await c.query(column)).rows.map((r) => r.v)));
    for (const v of [NASTY[1], NASTY[3], NASTY[4], NASTY[7]]) expect(back).toContain(v);
  });

  it('verify compares the hostile tables, all of them and named with --tables', async () => {
    const [all, one] = await Promise.all([
      cli(w, ['verify', 'a', '--source', w.sourceUrl, '--replica', `a=${w.replicaUrls.a}`, '--json']),
      cli(w, ['verify', 'a', '--source', w.sourceUrl, '--replica', `a=${w.replicaUrls.a}`, '--tables', `${T2},${T1}`, '--json']),
    ]);
    expect(all.code, all.stdout + all.stderr).toBe(0);
    expect(one.code, one.stdout + one.stderr).toBe(0);
    const report = JSON.parse(all.stdout);
    expect(report.equal).toBe(true);
    expect(report.tables.map((t: { table: string }) => t.table).sort()).toEqual([
      `"sch.ema, ok"."ta.ble, too; DROP TABLE victim; --"`,
      `"we""ird; DROP"."Ta""ble 'x'"`,
      `"we""ird; DROP"."nokey ""full"""`,
    ]);
    expect(JSON.parse(one.stdout).tables).toHaveLength(2);
    const onlyB = await cli(w, ['--config', configFile, 'verify', 'b', '--json']); // b's tables are in the file
    expect(onlyB.code, onlyB.stdout + onlyB.stderr).toBe(0);
    expect(JSON.parse(onlyB.stdout).tables.map((t: { table: string }) => t.table)).toEqual([`"we""ird; DROP"."Ta""ble 'x'"`]);

    // A difference in a hostile table is found and named.
    await w.replicas.withClient('replica_a', (c) => c.query(`UPDATE ${T1} SET "a b" = 'tampered' WHERE "co;l""umn" = 1`));
    const differs = await cli(w, ['verify', 'a', '--source', w.sourceUrl, '--replica', `a=${w.replicaUrls.a}`, '--tables', T1, '--json']);
    expect(differs.code, differs.stdout + differs.stderr).toBe(1);
    expect(JSON.parse(differs.stdout).tables[0].changed).toHaveLength(1);
    const original = await w.source.withClient('app', async (c) => (await c.query(`SELECT "a b" AS v FROM ${T1} WHERE "co;l""umn" = 1`)).rows[0].v);
    await w.replicas.withClient('replica_a', (c) => c.query(`UPDATE ${T1} SET "a b" = $1 WHERE "co;l""umn" = 1`, [original]));
  });

  it('replica add --snapshot --create-tables copies the hostile tables into an empty database', async () => {
    const cUrl = await w.replicas.createDatabase('replica_c');
    // --create-tables needs user-defined types first; the schemas it creates itself.
    await w.replicas.withClient('replica_c', (c) => c.query(`CREATE SCHEMA ${S1}; CREATE TYPE ${MOOD} AS ENUM ('it''s', 'say "hi"', 'back\\slash');`));
    await insertT1(5000, NASTY[0]);
    await src(`INSERT INTO ${T2} ("from") VALUES ($1)`, [NASTY[3]]);
    await src(`INSERT INTO ${T3} VALUES (7, $1)`, [NASTY[1]]);
    const add = await cli(w, ['replica', 'add', 'c', '--snapshot', '--create-tables', '--tables', TABLES_FLAG, '--source', w.sourceUrl, '--replica', `c=${cUrl}`]);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    for (const t of TABLES) expect(add.stdout).toContain(t); // "replica 'c': created …", names quoted as SQL writes them
    // Nothing is written after the snapshot: the copy must equal the source.
    expect(await contentOf(w.replicas, 'replica_c', TABLES)).toEqual(await contentOf(w.source, 'app', TABLES));
    // The serial's sequence was created under its hostile name; sync-sequences raises it; the defaults work on the copy.
    const seq = await cli(w, ['replica', 'sync-sequences', 'c', '--source', w.sourceUrl, '--replica', `c=${cUrl}`]);
    expect(seq.code, seq.stdout + seq.stderr).toBe(0);
    expect(seq.stdout).toContain(`"sch.ema, ok"."ta.ble, too; DROP TABLE victim; --_id_seq"`);
    const next = await w.replicas.withClient('replica_c', async (c) => (await c.query(`INSERT INTO ${T2} DEFAULT VALUES RETURNING "x""y"::text AS j, "where"`)).rows[0]);
    expect(next).toEqual({ j: `{"a": "b'c"}`, where: `it's; DROP TABLE victim` });
    const verified = await cli(w, ['verify', 'c', '--source', w.sourceUrl, '--replica', `c=${cUrl}`, '--tables', `${T1},${T3}`]);
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
    await waitForEqual(w, 'a', TABLES);
    for (const [cluster, db] of [[w.source, 'app'], [w.replicas, 'replica_a']] as const) {
      expect((await contentOf(cluster, db, ['victim'])).victim).toEqual(['(1)']);
    }
  });

  it('trigger mode installs its triggers on the hostile tables and replicates them', async () => {
    // One source per Temporal namespace at a time: the WAL source's process and workflows end first.
    await up.stop();
    const connection = await Connection.connect({ address: w.temporal.address });
    try {
      const client = new Client({ connection });
      for (const id of [`pgferry-capture-${w.sourceName}`, 'pgferry-replica-a', 'pgferry-replica-b']) await client.workflow.getHandle(id).terminate('next test');
    } finally {
      await connection.close();
    }
    const sourceUrl = await w.source.createDatabase('app_trg');
    await w.source.withClient('app_trg', (c) => c.query(SCHEMA));
    const replicaUrl = await w.replicas.createDatabase('replica_ta');
    await w.replicas.withClient('replica_ta', (c) => c.query(SCHEMA));
    const trg = (sql: string, values?: unknown[]) => w.source.withClient('app_trg', (c) => c.query(sql, values));
    trigger = await startUp(w, ['up', '--mode', 'trigger', '--source', sourceUrl, '--replica', `ta=${replicaUrl}`, '--tables', TABLES_FLAG], { PGFERRY_SOURCE_NAME: triggerSource });

    for (let i = 0; i < NASTY.length; i++) {
      await trg(`INSERT INTO ${T1} ("co;l""umn", "select", "a b", "$1") VALUES ($1, $2, $2, 'it''s')`, [i, NASTY[i]]);
      await trg(`INSERT INTO ${T2} ("from", "where") VALUES ($1, $1)`, [NASTY[i]]);
      await trg(`INSERT INTO ${T3} VALUES ($1, $2)`, [i % 3, NASTY[i]]);
    }
    await trg(`UPDATE ${T1} SET "co;l""umn" = "co;l""umn" + 100, "ünï©ødé 日本" = $1 WHERE "co;l""umn" % 2 = 0`, [NASTY[0]]);
    await trg(`DELETE FROM ${T1} WHERE "co;l""umn" = 3`);
    await trg(`UPDATE ${T3} SET "group" = 'x' WHERE "order" = 1`);
    await trg(`DELETE FROM ${T3} WHERE "order" = 2`);
    await trg(`TRUNCATE ${T2}`);
    await trg(`INSERT INTO ${T2} ("from") VALUES ($1)`, [NASTY[1]]);
    await waitFor(
      'the trigger-mode replica to equal its source',
      async () => JSON.stringify(await contentOf(w.replicas, 'replica_ta', TABLES)) === JSON.stringify(await contentOf(w.source, 'app_trg', TABLES)),
      60_000,
      500,
    );
    const content = await contentOf(w.replicas, 'replica_ta', [...TABLES, 'victim']);
    expect(content[T2]).toHaveLength(1);
    expect(content[T1]).toHaveLength(NASTY.length - 1);
    expect(content.victim).toEqual(['(1)']);
    expect((await contentOf(w.source, 'app_trg', ['victim'])).victim).toEqual(['(1)']);
  });
});
