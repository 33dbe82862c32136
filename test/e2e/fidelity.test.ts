import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import { contentOf, createWorld, startUp, waitForEqual, World } from '../helpers/fixture';

/**
 * Faithful apply: every built-in type round-trips exactly (`row::text` equal),
 * unchanged TOAST stays, all replica identities, TRUNCATE, hostile
 * identifiers, generated and identity columns, partitioned tables.
 */
const TYPES = `
  CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
  CREATE DOMAIN posint AS int CHECK (VALUE > 0);
  CREATE TYPE pair AS (a int, b text);
  CREATE TABLE types (
    id int PRIMARY KEY,
    i2 int2, i4 int4, i8 int8, num numeric, num_p numeric(30,10), f4 float4, f8 float8, b bool,
    t text, vc varchar(20), ch char(5), ba bytea,
    d date, tm time, tmtz timetz, ts timestamp, tstz timestamptz, iv interval, u uuid,
    j json, jb jsonb, ia int[], ta text[], ia2 int[][],
    e mood, dom posint, r int4range, tr tstzrange, mr int4multirange, comp pair,
    ip inet, cidr_ cidr, mac macaddr, bt bit(4), vb varbit, m money, tsv tsvector, x xml,
    pt point, ln line, ls lseg, bx box, pa path, pg polygon, ci circle, o oid
  );
`;
const ROWS = `
  INSERT INTO types VALUES
  (1, -32768, 2147483647, -9223372036854775808, 12345678901234567890.123456789012345678901234567890, 1.5, 1.17549e-38, 1.7976931348623157e308, true,
   'naïve 日本 "q" \\ back', '', 'ab', '\\xdeadbeef00',
   '2026-02-28', '23:59:59.999999', '01:02:03.456789+05:30', '2026-01-02 03:04:05.123456', '2026-01-02 03:04:05.123456+00', '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
   '{"b": 1,   "a": [1, 2]}', '{"b": 1, "a": [1, 2]}', '{1,NULL,3}', '{"a,b","c\\"d",NULL,""}', '{{1,2},{3,4}}',
   'happy', 7, '[1,10)', '[2026-01-01 00:00:00+00,infinity)', '{[1,3),[5,7)}', '(1,"x, \\"y\\"")',
   '192.168.1.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', B'1010', B'101', 1234.56, 'a fat cat', '<a x="1">t</a>',
   '(1.5,-2)', '{1,2,3}', '[(0,0),(1,1)]', '((0,0),(2,2))', '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(1,0))', '<(0,0),5>', 42),
  (2, 0, 0, 0, 'NaN', 0, 'NaN', '-Infinity', false,
   NULL, NULL, NULL, NULL,
   '4713-01-01 BC', '00:00:00', '00:00:00+00', '-infinity', 'infinity', '-1 days', NULL,
   '[]', '{}', '{}', '{NULL}', NULL,
   'sad', 1, 'empty', NULL, '{}', '(,)',
   '::1', '::/0', 'ff:ff:ff:ff:ff:ff', B'0000', B'', -0.01, '', NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0),
  (3, 1, 1, 1, '-0.000000000000000000000000000001', -1, '-0', 'Infinity', NULL,
   'tab\tnewline\nend', 'x', 'y', '\\x',
   '0001-01-01', '24:00:00', '24:00:00-15:59', '0001-01-01 00:00:00 BC', '1999-12-31 23:59:59.999999+14', '0', NULL,
   'null', 'null', '{{{1}}}', '{"\\\\"}', '{{NULL,NULL}}',
   'ok', 2147483647, '(,)', 'empty', '{(,)}', '(0,)',
   '0.0.0.0', '255.255.255.255/32', '00:00:00:00:00:00', B'1111', B'11111111111111111111', 0, 'x:1A y:2B', '<r/>',
   '(0,-0)', '{0,1,0}', '[(1,2),(3,4)]', '((1,1),(1,1))', '((0,0))', '((0,0))', '<(1,1),0>', 4294967295);
`;
const MORE = `
  -- unchanged TOAST with REPLICA IDENTITY DEFAULT and FULL
  CREATE TABLE toast_default (id int PRIMARY KEY, big text, small int);
  CREATE TABLE toast_full (id int, big text, small int);
  ALTER TABLE toast_full REPLICA IDENTITY FULL;
  -- FULL without a key: duplicates, NULLs, a json column (no equality operator)
  CREATE TABLE nokey (a int, b text, j json);
  ALTER TABLE nokey REPLICA IDENTITY FULL;
  -- USING INDEX
  CREATE TABLE by_index (id int NOT NULL, code text NOT NULL, v text);
  CREATE UNIQUE INDEX by_index_code ON by_index (code);
  ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_code;
  -- TRUNCATE: several tables, CASCADE, RESTART IDENTITY
  CREATE TABLE parent (id serial PRIMARY KEY, v text);
  CREATE TABLE child (id serial PRIMARY KEY, parent_id int REFERENCES parent(id), v text);
  CREATE TABLE lone (id serial PRIMARY KEY, v text);
  -- identifiers
  CREATE SCHEMA "Odd Schema";
  CREATE TABLE "Odd Schema"."x""; drop table y; --" ("select" int PRIMARY KEY, "Mixed Case" text, "a b" text);
  CREATE TABLE "Odd Schema".lone (id int PRIMARY KEY, v text);
  -- generated and identity columns
  CREATE TABLE gen (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, price numeric, qty int, total numeric GENERATED ALWAYS AS (price * qty) STORED);
  -- no way to identify rows: reported at start-up
  CREATE TABLE no_identity (a int);
  ALTER TABLE no_identity REPLICA IDENTITY NOTHING;
  CREATE TABLE "no key" (a int);
  -- partitioned on the source
  CREATE TABLE measurements (id int, at date NOT NULL, v numeric, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
  CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
  CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
`;
// The replica keeps measurements as one plain table: partitioned differently (not at all).
const REPLICA_MORE = MORE.replace(/CREATE TABLE measurements \(([^;]*)\) PARTITION BY RANGE \(at\);[^]*$/, 'CREATE TABLE measurements ($1);');

const TABLES = [
  'types',
  'toast_default',
  'toast_full',
  'nokey',
  'by_index',
  'parent',
  'child',
  'lone',
  `"Odd Schema"."x""; drop table y; --"`,
  `"Odd Schema".lone`,
  'gen',
  'measurements',
];

describe('faithful apply', () => {
  let w: World;
  let up: Proc;

  beforeAll(async () => {
    // Source and replica disagree on every setting that changes how values are written as text:
    // pgferry pins its own sessions, so none of this may leak into the data.
    w = await createWorld({
      replicas: ['a'],
      schema: TYPES,
      sourceSettings: { DateStyle: "'SQL, DMY'", IntervalStyle: "'sql_standard'", extra_float_digits: '0', bytea_output: "'escape'" },
      replicaSettings: { DateStyle: "'German, MDY'", IntervalStyle: "'iso_8601'", extra_float_digits: '-3' },
    });
    await w.source.withClient('app', (c) => c.query(MORE));
    await w.replicas.withClient('replica_a', (c) => c.query(REPLICA_MORE));
    up = await startUp(w);
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  const src = (sql: string) => w.source.withClient('app', (c) => c.query(sql));

  it('reports, at start-up, tables whose rows cannot be identified, with the fix', () => {
    expect(up.output()).toContain(
      `WARNING source '${w.sourceName}': table public.no_identity has REPLICA IDENTITY NOTHING, so PostgreSQL refuses UPDATE and DELETE on it while it is replicated; run ALTER TABLE public.no_identity REPLICA IDENTITY FULL, or add a primary key`,
    );
    expect(up.output()).toContain(`table public."no key" has no primary key or replica identity`);
    expect(up.output()).not.toMatch(/WARNING.*table public\.(types|nokey|by_index)\b/);
  });

  it('round-trips every built-in type exactly through insert, update and delete', async () => {
    await src(ROWS);
    await waitForEqual(w, 'a', ['types']);
    await src(`UPDATE types SET t = t || ' updated', jb = jb || '{"z": 0}', ia2 = '{{5,6},{7,8}}', ts = ts + interval '1 microsecond' WHERE id = 1`);
    await src(`UPDATE types SET id = 20, f8 = 'NaN' WHERE id = 2`);
    await src(`DELETE FROM types WHERE id = 3`);
    await waitForEqual(w, 'a', ['types']);
    const rows = (await contentOf(w.replicas, 'replica_a', ['types'])).types;
    expect(rows).toHaveLength(2);
    const j = await w.replicas.withClient('replica_a', async (c) => (await c.query('SELECT j::text FROM types WHERE id = 1')).rows[0].j);
    expect(j).toBe('{"b": 1,   "a": [1, 2]}'); // json kept byte for byte

    // A long run of inserts goes by COPY instead of INSERT: every type must survive that path too
    // (tabs, newlines and backslashes inside values included).
    await src(`INSERT INTO types SELECT (jsonb_populate_record(whole, jsonb_build_object('id', whole.id + 1000 * g))).* FROM types whole, generate_series(1, 100) g`);
    await waitForEqual(w, 'a', ['types']);

    // Interleaved single-row inserts, updates and deletes go to the replica many statements to a
    // round trip, each value cast to the replica's column type: char(n), bit(n), numeric(p,s) included.
    await src(`DO $$ BEGIN
      FOR k IN 1..10 LOOP
        INSERT INTO types SELECT (jsonb_populate_record(whole, jsonb_build_object('id', 500000 + k))).* FROM types whole WHERE id = 1;
        UPDATE types AS t SET (i2, num_p, ch, bt, vb, ba, tstz, e, dom, comp, ta, x) = (s.i2, s.num_p, s.ch, s.bt, s.vb, s.ba, s.tstz, s.e, s.dom, s.comp, s.ta, s.x)
          FROM types s WHERE s.id = 1 AND t.id = 1000 * k + 20;
        DELETE FROM types WHERE id = 1000 * k + 1;
      END LOOP; END $$`);
    await waitForEqual(w, 'a', ['types']);
    expect(up.output()).not.toMatch(/refused a group of statements/); // they went grouped, not one by one after a refusal
    await waitForEqual(w, 'a', ['types']);
  });

  it('leaves unchanged TOASTed values untouched (identity DEFAULT and FULL)', async () => {
    await src(`INSERT INTO toast_default SELECT g, repeat(md5(g::text), 1000), g FROM generate_series(1, 3) g`);
    await src(`INSERT INTO toast_full SELECT g, repeat(md5(g::text), 1000), g FROM generate_series(1, 3) g`);
    await src(`UPDATE toast_default SET small = small + 100`);
    await src(`UPDATE toast_full SET small = small + 100`);
    await waitForEqual(w, 'a', ['toast_default', 'toast_full']);
    const big = await w.replicas.withClient('replica_a', async (c) => (await c.query(`SELECT min(length(big)) AS n FROM toast_default`)).rows[0].n);
    expect(big).toBe(32000);
  });

  it('matches whole rows for REPLICA IDENTITY FULL, one row at a time, NULLs and json included; and by a unique index', async () => {
    await src(`INSERT INTO nokey VALUES (1, 'dup', '{"k": 1}'), (1, 'dup', '{"k": 1}'), (2, NULL, NULL), (3, 'x', '[ ]')`);
    await src(`UPDATE nokey SET b = 'changed' WHERE ctid = (SELECT ctid FROM nokey WHERE a = 1 LIMIT 1)`);
    await src(`DELETE FROM nokey WHERE a = 2`);
    await src(`UPDATE nokey SET a = 30 WHERE a = 3`);
    await src(`INSERT INTO by_index VALUES (1, 'A', 'one'), (2, 'B', 'two')`);
    await src(`UPDATE by_index SET code = 'C', v = 'moved' WHERE code = 'A'`);
    await src(`DELETE FROM by_index WHERE code = 'B'`);
    await waitForEqual(w, 'a', ['nokey', 'by_index']);
  });

  it('applies TRUNCATE of several tables, with CASCADE and RESTART IDENTITY, in order with surrounding changes', async () => {
    await src(`INSERT INTO parent (v) SELECT 'p' || g FROM generate_series(1, 5) g`);
    await src(`INSERT INTO child (parent_id, v) SELECT g, 'c' || g FROM generate_series(1, 5) g`);
    await src(`INSERT INTO lone (v) VALUES ('x'), ('y')`);
    await src(`BEGIN; INSERT INTO lone (v) VALUES ('z'); TRUNCATE parent, lone RESTART IDENTITY CASCADE; INSERT INTO lone (v) VALUES ('after'); INSERT INTO parent (v) VALUES ('new'); COMMIT`);
    await waitForEqual(w, 'a', ['parent', 'child', 'lone']);
    const lone = (await contentOf(w.replicas, 'replica_a', ['lone'])).lone;
    expect(lone).toEqual(['(1,after)']);
    // RESTART IDENTITY reached the replica's sequences too
    const next = await w.replicas.withClient('replica_a', async (c) => (await c.query(`SELECT last_value FROM lone_id_seq`)).rows[0].last_value);
    expect(Number(next)).toBe(1);
  });

  it('replicates hostile identifiers, the same table name in two schemas, generated, identity and partitioned tables', async () => {
    await src(`INSERT INTO "Odd Schema"."x""; drop table y; --" VALUES (1, 'Mixed', 'a b'), (2, NULL, '')`);
    await src(`UPDATE "Odd Schema"."x""; drop table y; --" SET "select" = 3, "Mixed Case" = 'changed' WHERE "select" = 1`);
    await src(`INSERT INTO "Odd Schema".lone VALUES (1, 'other schema')`);
    await src(`INSERT INTO gen (price, qty) VALUES (1.5, 2), (10, 3)`);
    await src(`UPDATE gen SET qty = qty + 1 WHERE id = 1`);
    await src(`INSERT INTO measurements VALUES (1, '2025-06-01', 1.1), (2, '2026-06-01', 2.2)`);
    await src(`UPDATE measurements SET at = '2026-07-01' WHERE id = 1`); // moves across partitions
    await waitForEqual(w, 'a', TABLES);
  });
});
