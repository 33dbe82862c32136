import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { captureTriggers } from '../../src/capture/trigger/capture';
import { prepareTriggerSource } from '../../src/capture/trigger/install';
import { UnavailableError } from '../../src/errors';
import { logger } from '../../src/logger';
import { PgCluster } from '../helpers/pg-cluster';
import { RABBIT_URL, deleteStream } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';
import * as amqp from 'amqplib';
import { StreamReader } from '../../src/changelog/stream';
import { decodeTxn } from '../../src/changelog/envelope';
import type { TxnMessage } from '../../src/change';
import { describeSchemaChange } from '../../src/schema-change';

/**
 * Trigger capture against a real source (wal_level=replica) and the
 * machine's RabbitMQ, called as a library: what must hold between two
 * capture sessions of one source.
 */
/** Every message of a source's stream from its start, decoded (read anew on each call). */
async function streamTxns(conn: amqp.ChannelModel, stream: string): Promise<TxnMessage[]> {
  const out: TxnMessage[] = [];
  const reader = await StreamReader.open(conn, stream, 'first', 64);
  try {
    for (let m = await reader.next(1000); m; m = await reader.next(300)) out.push(decodeTxn(m.body));
  } finally {
    await reader.close();
  }
  return out;
}

describe('trigger capture sessions', () => {
  let source: PgCluster;
  let url: string;
  const name = `tc${Math.random().toString(36).slice(2, 10)}`;

  beforeAll(async () => {
    source = await PgCluster.start({ wal_level: 'replica' });
    url = await source.createDatabase('app');
    await source.withClient('app', (c) => c.query('CREATE TABLE t (id int PRIMARY KEY, v text)'));
    await prepareTriggerSource(url, name, {});
  });
  afterAll(async () => {
    source?.destroy();
    await deleteStream(name).catch(() => undefined);
  });

  const run = (signal: AbortSignal, progress: { seen: number } = { seen: 0 }, chunkChanges = 100) =>
    captureTriggers({
      source: name,
      url,
      rabbitUrl: RABBIT_URL,
      chunkChanges,
      retention: { maxBytes: 0, maxAge: '', segmentBytes: 1_000_000 },
      signal,
      onProgress: () => (progress.seen += 1),
      maxRunMs: 60_000,
      log: logger.child({ test: true }),
    });

  it('defect I: a second capture of the same source refuses to run beside the first (it would interleave chunks), and runs once the first ends', async () => {
    const first = new AbortController();
    const progress = { seen: 0 };
    const running = run(first.signal, progress);
    await waitFor('the first capture to run', () => progress.seen > 0, 30_000, 100);
    const second = new AbortController();
    const err = await run(second.signal).catch((e) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(String(err.message)).toMatch(new RegExp(`source '${name}': another trigger capture of this source is running \\(backend pid \\d+`));
    first.abort();
    await running;
    // The lock went with the first session: a new one runs.
    const third = new AbortController();
    const p3 = { seen: 0 };
    const again = run(third.signal, p3);
    await waitFor('the next capture to run', () => p3.seen > 0, 30_000, 100);
    third.abort();
    await expect(again).resolves.toMatchObject({ txns: expect.any(Number) });
  });

  const triggersOn = async (table: string) =>
    source.withClient('app', async (c) =>
      (await c.query(`SELECT tgname::text AS name FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal ORDER BY 1`, [table])).rows.map((r) => r.name),
    );

  it('defects E and F: queued events follow renamed tables and columns, leave out dropped columns without shifting values, and a dropped table is applied by its names', async () => {
    const sql = (q: string) => source.withClient('app', (c) => c.query(q));
    // Installed for all tables (beforeAll): a table is captured from its CREATE TABLE on (schema-capture/0002).
    await sql(`CREATE TABLE born_later (id int PRIMARY KEY)`);
    expect(await triggersOn('born_later')).toEqual(['pgferry_capture', 'pgferry_truncate', 'pgferry_wake']);
    // Without schema-change capture from here on (prepareTriggerSource installs it again; dropped again below).
    await sql('DROP EVENT TRIGGER pgferry_schema_changes');
    await sql(`CREATE TABLE ef (id int PRIMARY KEY, a text, b text, c text); CREATE TABLE gone (id int PRIMARY KEY, v text)`);
    expect(await triggersOn('ef')).toEqual([]);
    await prepareTriggerSource(url, name, { tables: ['public.t', 'public.ef', 'public.gone'] });
    // Named tables: one created now is not captured until the config names it.
    await sql(`CREATE TABLE not_named (id int PRIMARY KEY)`);
    expect(await triggersOn('not_named')).toEqual([]);
    // Without schema-change capture (no superuser to install its event trigger): queued rows follow the table as it is now.
    await sql('DROP EVENT TRIGGER pgferry_schema_changes');
    // All of this is queued while no capture runs.
    await sql(`INSERT INTO ef VALUES (1, 'a1', 'b1', 'c1')`);
    await sql(`ALTER TABLE ef DROP COLUMN b; ALTER TABLE ef ADD COLUMN d text`);
    await sql(`INSERT INTO ef VALUES (2, 'a2', 'c2', 'd2')`);
    await sql(`ALTER TABLE ef RENAME COLUMN a TO a_renamed`);
    await sql(`UPDATE ef SET c = 'c3' WHERE id = 1`);
    await sql(`ALTER TABLE ef RENAME TO ef2`);
    await sql(`INSERT INTO ef2 (id, a_renamed, c, d) VALUES (3, 'a3', 'c3', 'd3')`);
    await sql(`INSERT INTO gone VALUES (1, 'x')`);
    await sql(`DROP TABLE gone`);

    const stop = new AbortController();
    const progress = { seen: 0 };
    const running = run(stop.signal, progress);
    const conn = await amqp.connect(RABBIT_URL);
    const changes: { table: string; op: string; new?: unknown; old?: unknown }[] = [];
    try {
      await waitFor(
        'the queued changes to reach the stream',
        async () => {
          changes.length = 0;
          for (const t of await streamTxns(conn, name)) {
            for (const ch of t.changes) {
              if (ch.op === 'truncate' || ch.op === 'schema') continue;
              const r = t.relations[ch.rel];
              changes.push({ table: `${r.schema}.${r.table}`, op: ch.op, new: 'new' in ch ? ch.new : undefined, old: 'old' in ch ? ch.old : undefined });
            }
          }
          return changes.length >= 5;
        },
        30_000,
        500,
      );
    } finally {
      stop.abort();
      await running;
      await conn.close();
    }
    expect(changes).toEqual([
      // Written with columns (id, a, b, c): b is gone, a is now a_renamed, the table is now ef2. Before: c took b's value.
      { table: 'public.ef2', op: 'insert', new: { id: '1', a_renamed: 'a1', c: 'c1' }, old: undefined },
      { table: 'public.ef2', op: 'insert', new: { id: '2', a_renamed: 'a2', c: 'c2', d: 'd2' }, old: undefined },
      { table: 'public.ef2', op: 'update', old: { id: '1' }, new: { id: '1', a_renamed: 'a1', c: 'c3', d: null } },
      { table: 'public.ef2', op: 'insert', new: { id: '3', a_renamed: 'a3', c: 'c3', d: 'd3' }, old: undefined },
      // A table dropped with changes queued: applied by the names it had (before: looked up and retried forever).
      { table: 'public.gone', op: 'insert', new: { id: '1', v: 'x' }, old: undefined },
    ]);
  });

  it('with schema changes captured, rows keep the names and shape they were written with, and each change comes in its place', async () => {
    const sql = (q: string) => source.withClient('app', (c) => c.query(q));
    await sql(`CREATE TABLE sc (id int PRIMARY KEY, a text, b text)`);
    await prepareTriggerSource(url, name, { tables: ['public.t', 'public.sc'] }); // installs the event trigger again
    const stop = new AbortController();
    const running = run(stop.signal); // live: capture reads while the changes are made
    await sql(`INSERT INTO sc VALUES (1, 'a1', 'b1')`);
    await sql(`ALTER TABLE sc RENAME COLUMN a TO a2`);
    await sql(`INSERT INTO sc VALUES (2, 'a2', 'b2')`);
    await sql(`ALTER TABLE sc RENAME TO sc2`);
    // Rows before and after the change in one transaction (the row trigger's per-transaction shape cache is reset by it).
    await sql(`BEGIN; INSERT INTO sc2 VALUES (9, 'a9', 'b9'); ALTER TABLE sc2 ADD COLUMN c int; UPDATE sc2 SET c = id * 2; COMMIT`);
    await sql(`ALTER TABLE sc2 DROP COLUMN b`);
    await sql(`INSERT INTO sc2 VALUES (3, 'a3', 6)`);

    const conn = await amqp.connect(RABBIT_URL);
    const seen: unknown[] = [];
    try {
      await waitFor(
        'the queued changes to reach the stream',
        async () => {
          seen.length = 0;
          for (const t of await streamTxns(conn, name)) {
            for (const ch of t.changes) {
              if (ch.op === 'schema') {
                if ((ch.after ?? ch.before)?.table.startsWith('sc')) seen.push({ schema: describeSchemaChange(ch) });
              }
              else if (ch.op !== 'truncate' && t.relations[ch.rel].table.startsWith('sc')) {
                const r = t.relations[ch.rel];
                seen.push({ table: r.table, columns: r.columns.map((c) => c.name).join(','), op: ch.op, new: 'new' in ch ? ch.new : undefined });
              }
            }
          }
          if (process.env.DEBUG_SC) console.log(JSON.stringify(seen));
          return seen.length >= 11;
        },
        30_000,
        500,
      );
    } finally {
      stop.abort();
      await running;
      await conn.close();
    }
    expect(seen).toEqual([
      { table: 'sc', columns: 'id,a,b', op: 'insert', new: { id: '1', a: 'a1', b: 'b1' } },
      { schema: 'ALTER TABLE public.sc: rename column a to a2' },
      { table: 'sc', columns: 'id,a2,b', op: 'insert', new: { id: '2', a2: 'a2', b: 'b2' } },
      { schema: 'ALTER TABLE public.sc: rename to sc2' },
      { table: 'sc2', columns: 'id,a2,b', op: 'insert', new: { id: '9', a2: 'a9', b: 'b9' } },
      { schema: 'ALTER TABLE public.sc2: add column c integer' },
      { table: 'sc2', columns: 'id,a2,b,c', op: 'update', new: { id: '1', a2: 'a1', b: 'b1', c: '2' } },
      { table: 'sc2', columns: 'id,a2,b,c', op: 'update', new: { id: '2', a2: 'a2', b: 'b2', c: '4' } },
      { table: 'sc2', columns: 'id,a2,b,c', op: 'update', new: { id: '9', a2: 'a9', b: 'b9', c: '18' } },
      { schema: 'ALTER TABLE public.sc2: drop column b' },
      { table: 'sc2', columns: 'id,a2,c', op: 'insert', new: { id: '3', a2: 'a3', c: '6' } },
    ]);
  });

  it('reads a transaction whose event ids cross a power of ten in order and whole, page by page (they were ordered as text: 999 after 1000, and pages skipped events)', async () => {
    const sql = (q: string) => source.withClient('app', (c) => c.query(q));
    await sql(`CREATE TABLE digits (id int PRIMARY KEY, n int)`);
    await prepareTriggerSource(url, name, { tables: ['public.t', 'public.digits'] });
    await sql(`SELECT setval('pgferry.events_ev_id_seq', 9994)`);
    await sql(`BEGIN; INSERT INTO digits VALUES (1, 0); ${Array.from({ length: 11 }, (_, i) => `UPDATE digits SET n = ${i + 1} WHERE id = 1;`).join(' ')} COMMIT`);
    const stop = new AbortController();
    const running = run(stop.signal, { seen: 0 }, 4); // pages of 4 events: 9995..9998, 9999..10002, …
    const conn = await amqp.connect(RABBIT_URL);
    const ns: string[] = [];
    try {
      await waitFor(
        'the transaction to reach the stream',
        async () => {
          ns.length = 0;
          for (const t of await streamTxns(conn, name)) {
            for (const ch of t.changes) if (ch.op !== 'truncate' && ch.op !== 'schema' && t.relations[ch.rel].table === 'digits') ns.push(`${ch.op} ${'new' in ch ? ch.new.n : ''}`);
          }
          return ns.length >= 12;
        },
        30_000,
        500,
      );
    } finally {
      stop.abort();
      await running;
      await conn.close();
    }
    expect(ns).toEqual(['insert 0', ...Array.from({ length: 11 }, (_, i) => `update ${i + 1}`)]);
  });

  it('defect B: a source restored from a dump (same install, ticks behind its stream) starts a new history with a gap marker, never repeating positions', async () => {
    const sql = (q: string) => source.withClient('app', (c) => c.query(q));
    const read = async () => {
      const conn = await amqp.connect(RABBIT_URL);
      const out: { lsn: string; history?: string; gap?: string; ids: string[] }[] = [];
      try {
        for (const t of await streamTxns(conn, name)) {
          out.push({ lsn: t.lsn, history: t.history, gap: t.gap, ids: t.changes.flatMap((ch) => (ch.op === 'insert' && 'id' in ch.new ? [String(ch.new.id)] : [])) });
        }
      } finally {
        await conn.close();
      }
      return out;
    };
    const capture = async (until: (log: Awaited<ReturnType<typeof read>>) => boolean) => {
      const stop = new AbortController();
      const running = run(stop.signal);
      try {
        return await waitFor('capture to publish', async () => {
          const log = await read();
          return until(log) ? log : null;
        }, 30_000, 500);
      } finally {
        stop.abort();
        await running;
      }
    };
    for (let i = 100; i < 105; i++) await sql(`INSERT INTO t VALUES (${i}, 'before the restore')`);
    const before = await capture((log) => log.some((m) => m.ids.includes('104')));
    const oldHistory = before.find((m) => m.ids.includes('104'))!.history;
    // What restoring an older dump of the source does to trigger capture's state: ticks go back.
    await sql(`DELETE FROM pgferry.ticks; INSERT INTO pgferry.ticks (tick_id, snap) VALUES (1, pg_catalog.pg_current_snapshot());
               UPDATE pgferry.capture_state SET last_tick = 1; SELECT pg_catalog.setval('pgferry.ticks_tick_id_seq', 1)`);
    await sql(`INSERT INTO t VALUES (200, 'after the restore')`);
    const after = await capture((log) => log.some((m) => m.ids.includes('200')));
    const gap = after.find((m) => m.gap && /behind its change log/.test(m.gap));
    expect(gap, JSON.stringify(after.slice(-4))).toBeDefined();
    expect(gap!.history).not.toBe(oldHistory);
    const fresh = after.find((m) => m.ids.includes('200'))!;
    expect(fresh.history).toBe(gap!.history);
  });

  it('taking all tables: a table created later is captured from its CREATE (named CREATE TABLE even with a foreign key), and one created LIKE a partitioned root attaches to it and is then captured through the root', async () => {
    const sql = (q: string) => source.withClient('app', (c) => c.query(q));
    await prepareTriggerSource(url, name, {}); // all tables again (earlier cases named theirs)
    await sql(`CREATE TABLE fk_child (id int PRIMARY KEY, t_id int REFERENCES t)`);
    expect(await triggersOn('fk_child')).toEqual(['pgferry_capture', 'pgferry_truncate', 'pgferry_wake']);
    const created = await sql(`SELECT new_row::jsonb->>'command' AS command, new_row::jsonb->'old' AS old FROM pgferry.events WHERE op = 'S' AND rel_oid = 'fk_child'::regclass::oid`);
    expect(created.rows).toEqual([{ command: 'CREATE TABLE', old: null }]);

    await sql(`CREATE TABLE "Part Root" (id int, k int, PRIMARY KEY (id, k)) PARTITION BY RANGE (k)`);
    await sql(`CREATE TABLE "Part Root 1" (LIKE "Part Root" INCLUDING ALL)`);
    expect(await triggersOn('"Part Root 1"')).toEqual(['pgferry_capture', 'pgferry_truncate', 'pgferry_wake']);
    // Without the set-aside PostgreSQL refuses this: trigger "pgferry_capture" for relation "Part Root 1" already exists.
    await sql(`ALTER TABLE "Part Root" ATTACH PARTITION "Part Root 1" FOR VALUES FROM (0) TO (10)`);
    const clone = await sql(`SELECT tgname::text AS name, tgparentid <> 0 AS cloned FROM pg_trigger WHERE tgrelid = '"Part Root 1"'::regclass AND NOT tgisinternal ORDER BY 1`);
    // The row trigger is the root's clone; the TRUNCATE trigger describes a TRUNCATE of the partition (schema-capture/0004).
    expect(clone.rows).toEqual([
      { name: 'pgferry_capture', cloned: true },
      { name: 'pgferry_partition_truncate', cloned: false },
    ]);
    await sql(`INSERT INTO "Part Root" VALUES (1, 5)`);
    const rows = await sql(`SELECT rel_table FROM pgferry.events WHERE op = 'I' AND rel_oid IN ('"Part Root"'::regclass::oid, '"Part Root 1"'::regclass::oid)`);
    expect(rows.rows).toEqual([{ rel_table: 'Part Root' }]); // once, as the root
    // Start-up again: the partition's cloned trigger is the root's (dropping it was refused before: "… requires it").
    await prepareTriggerSource(url, name, {});
    expect((await sql(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = '"Part Root 1"'::regclass AND tgname = 'pgferry_capture'`)).rows).toEqual([{ n: 1 }]);
    // An ALTER TABLE whose text only contains a captured table's name sets nothing aside.
    await sql(`CREATE TABLE t2 (id int PRIMARY KEY)`);
    const rowTrigger = `SELECT oid::text FROM pg_trigger WHERE tgrelid = 't2'::regclass AND tgname = 'pgferry_capture'`;
    const before = (await sql(rowTrigger)).rows;
    await sql(`ALTER TABLE t2 ADD COLUMN note text /* attach partition t3 */`);
    expect((await sql(rowTrigger)).rows).toEqual(before); // the same trigger, not dropped and made again
    expect(before).toHaveLength(1);
    // Schema-qualified and unquoted (folded to lower case), as people write it.
    await sql(`CREATE TABLE part_root_3 (LIKE "Part Root" INCLUDING ALL)`);
    await sql(`ALTER TABLE public."Part Root" ATTACH PARTITION Public.PART_ROOT_3 FOR VALUES FROM (10) TO (20)`);
    expect((await sql(`SELECT tgname::text AS name, tgparentid <> 0 AS cloned FROM pg_trigger WHERE tgrelid = 'part_root_3'::regclass AND NOT tgisinternal ORDER BY 1`)).rows).toEqual([
      { name: 'pgferry_capture', cloned: true },
      { name: 'pgferry_partition_truncate', cloned: false },
    ]);
    // A failed ATTACH leaves the standalone table captured as it was.
    await sql(`CREATE TABLE "Part Root 2" (LIKE "Part Root" INCLUDING ALL)`);
    await expect(sql(`ALTER TABLE "Part Root" ATTACH PARTITION "Part Root 2" FOR VALUES FROM (5) TO (15)`)).rejects.toThrow(/overlap/);
    expect(await triggersOn('"Part Root 2"')).toEqual(['pgferry_capture', 'pgferry_truncate', 'pgferry_wake']);
  });
});
