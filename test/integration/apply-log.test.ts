import { beforeEach, describe, expect, it } from 'vitest';
import { CraftedLog, useCraftedLog, ins, relation, txn } from '../helpers/crafted-log';
import { relKey } from '../../src/change';
import { GapError, ProtocolError, RejectedChangeError } from '../../src/errors';
import { formatLsn } from '../../src/lsn';
import type pg from 'pg';
import { createPool, REPLICA_SESSION_OPTIONS } from '../../src/pg';
import { ensureTargetSchema } from '../../src/apply/target';
import { TableRegistry } from '../../src/apply/table-registry';
import { rewindReplica } from '../../src/apply/rewind';
import { ProgressStore } from '../../src/apply/progress-store';
import type { SchemaChange, TableShape } from '../../src/change';

/**
 * Apply against logs written by hand (real RabbitMQ stream, real replica
 * database, the library's applyBatch): the shapes capture produces only
 * under faults, each asserting the replica's content and position.
 */
const SCHEMA = `
  CREATE TABLE a (id bigint PRIMARY KEY, v text);
  CREATE TABLE b (id bigint PRIMARY KEY, v text);
`;

describe('apply of crafted logs', () => {
  let log: CraftedLog;
  // Every test: its own stream and an empty replica.
  useCraftedLog(SCHEMA, (l) => (log = l));

  let at = 0x1000;
  const next = () => (at += 0x100);

  it('defect A: small transactions before a large one re-sent from chunk 0 stay applied', async () => {
    // Before the fix, the savepoint of the large transaction was taken before the queued single-row
    // statements of the small ones were sent; the re-send rolled back to it and undid them, while
    // the checkpoint moved past them: lost, with every status saying running.
    const [s1, s2, big] = [next(), next(), next()];
    await log.publish(
      txn(s1, [ins('b', { id: '1', v: 'small 1' })]),
      txn(s2, [ins('b', { id: '2', v: 'small 2' })]),
      txn(big, [ins('a', { id: '1', v: 'big' }), ins('a', { id: '2', v: 'big' })], { seq: 0, last: false }),
      txn(big, [ins('a', { id: '3', v: 'big' })], { seq: 1, last: false }),
      // capture restarted mid-publish: the large transaction again, whole
      txn(big, [ins('a', { id: '1', v: 'big' }), ins('a', { id: '2', v: 'big' })], { seq: 0, last: false }),
      txn(big, [ins('a', { id: '3', v: 'big' })], { seq: 1, last: false }),
      txn(big, [ins('a', { id: '4', v: 'big' })], { seq: 2, last: true }),
    );
    const r = await log.apply();
    expect(r.txns).toBe(3);
    expect(await log.rows('SELECT id::int, v FROM b ORDER BY id')).toEqual([
      { id: 1, v: 'small 1' },
      { id: 2, v: 'small 2' },
    ]);
    expect(await log.rows('SELECT count(*)::int AS n FROM a')).toEqual([{ n: 4 }]);
  });

  it('defect A: small transactions before a large one whose next chunk times out stay applied, and the checkpoint names them', async () => {
    const [s1, big] = [next(), next()];
    await log.publish(txn(s1, [ins('b', { id: '7', v: 'small' })]), txn(big, [ins('a', { id: '1', v: 'big' })], { seq: 0, last: false }));
    const r = await log.apply({ chunkWaitMs: 500 });
    expect(r.txns).toBe(1);
    expect(await log.rows('SELECT id::int FROM b')).toEqual([{ id: 7 }]);
    expect(await log.rows('SELECT count(*)::int AS n FROM a')).toEqual([{ n: 0 }]);
    const progress = (await log.rows(`SELECT lsn::text FROM pgferry.progress WHERE replica = 'r'`)) as { lsn: string }[];
    expect(progress[0].lsn).toBe(r.appliedLsn);
    // The rest arrives: applied once, with nothing of it doubled.
    await log.publish(txn(big, [ins('a', { id: '1', v: 'big' })], { seq: 0, last: false }), txn(big, [ins('a', { id: '2', v: 'big' })], { seq: 1, last: true }));
    expect((await log.apply()).txns).toBe(1);
    expect(await log.rows('SELECT count(*)::int AS n FROM a')).toEqual([{ n: 2 }]);
    expect(await log.rows('SELECT id::int FROM b')).toEqual([{ id: 7 }]);
  });

  it('defect C: REPLICA IDENTITY FULL on a partitioned replica table deletes the one row, not its twins by ctid in other partitions', async () => {
    await log.reset(`CREATE TABLE p (a int NOT NULL, b text) PARTITION BY LIST (a);
                     CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1);
                     CREATE TABLE p2 PARTITION OF p FOR VALUES IN (2);
                     INSERT INTO p VALUES (1, 'x'), (2, 'y');`);
    const full = relation('p', { identity: 'full', columns: [{ name: 'a', type: 'integer', key: true }, { name: 'b', type: 'text', key: true }] });
    // Both rows are the first of their partition: the same ctid (0,1).
    expect(await log.rows(`SELECT tableoid::regclass::text AS part, ctid::text FROM p ORDER BY a`)).toEqual([
      { part: 'p1', ctid: '(0,1)' },
      { part: 'p2', ctid: '(0,1)' },
    ]);
    await log.publish(
      txn(next(), [{ op: 'delete', rel: relKey('public', 'p'), old: { a: '2', b: 'y' } }], { rels: [full] }),
      txn(next(), [{ op: 'update', rel: relKey('public', 'p'), old: { a: '1', b: 'x' }, new: { a: '1', b: 'x2' } }], { rels: [full] }),
    );
    expect((await log.apply()).txns).toBe(2);
    expect(await log.rows('SELECT a, b FROM p ORDER BY a')).toEqual([{ a: 1, b: 'x2' }]);
  });

  it('defect D: a TRUNCATE that cascaded on the source empties only the tables it names, and a replica-only reference refuses it loudly', async () => {
    await log.reset(`${SCHEMA}
      CREATE TABLE notes (id bigint PRIMARY KEY, a_id bigint REFERENCES a (id));
      INSERT INTO a VALUES (1, 'kept');
      INSERT INTO notes VALUES (1, 1);`);
    const [before, t] = [next(), next()];
    await log.publish(txn(before, [ins('b', { id: '1', v: 'before' })]), txn(t, [{ op: 'truncate', rels: [relKey('public', 'a')], cascade: true, restartIdentity: false }]));
    const err = await log.apply().catch((e) => e);
    expect(err).toBeInstanceOf(RejectedChangeError);
    expect(String(err.message)).toMatch(/truncate on public\.a at source position .* was rejected: cannot truncate a table referenced in a foreign key constraint/);
    // The replica-only table and the truncated table keep their rows; what came before the TRUNCATE is applied.
    expect(await log.rows('SELECT count(*)::int AS n FROM notes')).toEqual([{ n: 1 }]);
    expect(await log.rows('SELECT v FROM a')).toEqual([{ v: 'kept' }]);
    expect(await log.rows('SELECT v FROM b')).toEqual([{ v: 'before' }]);
  });

  it('defect J: a refused COMMIT (deferred constraint) stops the replica with the reason instead of retrying forever', async () => {
    await log.reset(`${SCHEMA}
      ALTER TABLE b ADD UNIQUE (v);
      CREATE TABLE child (id bigint PRIMARY KEY, v text REFERENCES b (v) DEFERRABLE INITIALLY DEFERRED);`);
    const child = relation('child');
    await log.publish(txn(next(), [{ op: 'insert', rel: relKey('public', 'child'), new: { id: '1', v: 'no such parent' } }], { rels: [child] }));
    const err = await log.apply().catch((e) => e);
    expect(err).toBeInstanceOf(RejectedChangeError);
    expect(String(err.message)).toMatch(/refused to commit the source transactions after 0\/0 up to .*violates foreign key constraint.*\[23503\]; nothing of them was applied/);
    expect(await log.rows('SELECT count(*)::int AS n FROM child')).toEqual([{ n: 0 }]);
  });

  it('defect J: chunks out of order stop the replica (ProtocolError) after applying what came before', async () => {
    const [first, big, after] = [next(), next(), next()];
    await log.publish(
      txn(first, [ins('b', { id: '1', v: 'first' })]),
      txn(big, [ins('a', { id: '1', v: 'x' })], { seq: 0, last: false }),
      txn(big, [ins('a', { id: '3', v: 'x' })], { seq: 2, last: true }),
      txn(after, [ins('b', { id: '2', v: 'after' })]),
    );
    const err = await log.apply().catch((e) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect(String(err.message)).toMatch(/is out of order at stream offset \d+: transaction .* chunk 0 arrived before transaction .* was delivered whole/);
    expect(await log.rows('SELECT v FROM b ORDER BY id')).toEqual([{ v: 'first' }]);
    expect(await log.rows('SELECT count(*)::int AS n FROM a')).toEqual([{ n: 0 }]);
  });

  it('defect J: a message of another envelope version stops the replica (ProtocolError) after applying what came before', async () => {
    const [first, later] = [next(), next()];
    await log.publish(txn(first, [ins('b', { id: '1', v: 'first' })]));
    await log.publishRaw(Buffer.from(JSON.stringify({ v: 99, lsn: '0/1' })), formatLsn(BigInt(later)));
    const err = await log.apply().catch((e) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect(String(err.message)).toMatch(/unsupported change envelope version 99 .*upgrade pgferry/);
    expect(await log.rows('SELECT v FROM b')).toEqual([{ v: 'first' }]);
  });

  it('defect J: a replica whose position belongs to another source is refused, naming both', async () => {
    await log.publish(txn(next(), [ins('b', { id: '1', v: 'x' })]));
    await log.apply();
    await log.rows(`UPDATE pgferry.progress SET source = 'elsewhere'`);
    await expect(log.apply()).rejects.toThrow(new RegExp(`replica 'r' holds the position of source 'elsewhere' \\(pgferry.progress\\), but is configured for source '${log.source}'`));
  });

  it('defect B: a new source history in the log stops the replica (needs_resync), never skipped as applied', async () => {
    // History H1 reached a high position; the source was then re-created: H2 starts low again.
    await log.publish(txn(0x90000, [ins('b', { id: '1', v: 'h1' })], { history: 'H1' }));
    await log.apply();
    await log.publish(txn(0x2000, [ins('b', { id: '2', v: 'h2' })], { history: 'H2' }));
    const err = await log.apply().catch((e) => e);
    expect(err).toBeInstanceOf(GapError);
    expect(String(err.message)).toMatch(/continues with another source history at stream offset \d+ \(H2, position 0\/2000; this replica applied H1 up to 0\/90000\)/);
    expect(await log.rows('SELECT v FROM b')).toEqual([{ v: 'h1' }]);
    expect(await log.rows(`SELECT history FROM pgferry.progress`)).toEqual([{ history: 'H1' }]);
  });

  it('defect J: a replica ALTER COLUMN … TYPE does not leave a connection writing with the old parameter types of its prepared statements', async () => {
    await log.reset(`CREATE TABLE n (id bigint PRIMARY KEY, v integer);`);
    const n = relation('n', { columns: [{ name: 'id', type: 'bigint', key: true }, { name: 'v', type: 'bigint', key: false }] });
    const c = await log.client(); // one connection, as a worker's pool keeps it
    try {
      await log.publish(txn(next(), [{ op: 'insert', rel: relKey('public', 'n'), new: { id: '1', v: '5' } }], { rels: [n] }));
      expect((await log.apply({ client: c })).txns).toBe(1);
      await log.rows('ALTER TABLE n ALTER COLUMN v TYPE bigint');
      await log.publish(txn(next(), [{ op: 'insert', rel: relKey('public', 'n'), new: { id: '2', v: '3000000000' } }], { rels: [n] }));
      expect((await log.apply({ client: c })).txns).toBe(1);
      expect(await log.rows('SELECT id::int, v::text FROM n ORDER BY id')).toEqual([
        { id: 1, v: '5' },
        { id: 2, v: '3000000000' },
      ]);
    } finally {
      await c.end();
    }
  });

  it("defect J: apply sessions pin search_path: a function a role's search_path puts before pg_catalog is never run", async () => {
    await log.reset(`${SCHEMA}
      CREATE SCHEMA attacker;
      CREATE FUNCTION attacker.now() RETURNS timestamptz LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked'; END $$;`);
    await log.rows(`ALTER DATABASE replica SET search_path = attacker, pg_catalog, public`);
    const pool = createPool(log.cluster.url(log.db), 1, REPLICA_SESSION_OPTIONS); // as the workers' replica pools
    const c = await pool.connect();
    try {
      await ensureTargetSchema(c);
      await log.publish(txn(next(), [ins('b', { id: '1', v: 'x' })]));
      expect((await log.apply({ client: c as unknown as pg.Client })).txns).toBe(1);
      expect(await log.rows('SELECT v FROM public.b')).toEqual([{ v: 'x' }]);
    } finally {
      c.release();
      await pool.end();
      await log.rows('ALTER DATABASE replica RESET search_path');
    }
  });
  it('issue 26.7: a transaction renaming a table, re-sent from chunk 0 while the batch is open, follows the rename again (the registry rolls back with the savepoint)', async () => {
    // Before the fix the registry the applier routes by kept the rename in memory after the savepoint
    // rolled it back on the replica: the re-sent rows of t found no entry under t (dropped as unknown),
    // the RENAME itself was dropped too, and the replica kept table t while t2's changes were lost.
    await log.reset(`${SCHEMA} CREATE TABLE t (id bigint PRIMARY KEY, v text);`);
    await log.cluster.withClient(log.db, async (c) => {
      await ensureTargetSchema(c);
      await TableRegistry.ensure(c, 'r', ['a', 'b', 't'].map((table) => ({ schema: 'public', table })));
    });
    const shape = (table: string): TableShape => ({
      schema: 'public',
      table,
      columns: [
        { num: 1, name: 'id', type: 'bigint', notNull: true, key: true, generated: false },
        { num: 2, name: 'v', type: 'text', notNull: false, key: false, generated: false },
      ],
    });
    const rename: SchemaChange = { op: 'schema', oid: 4242, command: 'ALTER TABLE', before: shape('t'), after: shape('t2'), fills: {}, unfilled: [] };
    const rels = [relation('a'), relation('t'), relation('t2')];
    const [big, later] = [next(), next()];
    const chunk0 = txn(big, [ins('t', { id: '1', v: 'before rename' }), rename, ins('t2', { id: '2', v: 'after rename' })], { seq: 0, last: false, rels });
    const chunk1 = txn(big, [ins('a', { id: '1', v: 'big' }), ins('a', { id: '2', v: 'big' })], { seq: 1, last: false, rels });
    await log.publish(
      chunk0,
      chunk1,
      // capture restarted mid-publish: the transaction again, whole, while the batch is still open
      chunk0,
      chunk1,
      txn(big, [ins('a', { id: '3', v: 'big' })], { seq: 2, last: true, rels }),
      txn(later, [ins('t2', { id: '3', v: 'later' })], { rels }),
    );
    const r = await log.apply();
    expect(r.txns).toBe(2);
    expect(await log.rows(`SELECT to_regclass('public.t')::text AS t, to_regclass('public.t2')::text AS t2`)).toEqual([{ t: null, t2: 't2' }]);
    expect(await log.rows('SELECT id::int, v FROM t2 ORDER BY id')).toEqual([
      { id: 1, v: 'before rename' },
      { id: 2, v: 'after rename' },
      { id: 3, v: 'later' },
    ]);
    expect(await log.rows('SELECT count(*)::int AS n FROM a')).toEqual([{ n: 3 }]);
    expect(await log.rows(`SELECT table_name FROM pgferry.replica_tables WHERE replica = 'r' ORDER BY 1`)).toEqual([{ table_name: 'a' }, { table_name: 'b' }, { table_name: 't2' }]);
  });
  describe('issue 26.10: replica rewind across source histories', () => {
    // H1 reached high positions; the source was re-created: H2 starts low again and is the source's history now.
    const [h1a, h1b, h2a, h2b, h2c] = [0x90000, 0x90100, 0x2000, 0x2100, 0x2200];
    // Offsets: the stream's identity marker is at 0, then h1a at 1 … h2c at 5.
    const rewind = (to: number, history = 'H2') =>
      rewindReplica({ rabbit: log.rabbit, source: log.source, replica: 'r', replicaUrl: log.cluster.url(log.db), to: formatLsn(BigInt(to)), sourceHistory: async () => history });
    beforeEach(async () => {
      await log.publish(
        txn(h1a, [ins('b', { id: '1', v: 'h1' })], { history: 'H1' }),
        txn(h1b, [ins('b', { id: '2', v: 'h1' })], { history: 'H1' }),
        txn(h2a, [ins('a', { id: '1', v: 'h2' })], { history: 'H2' }),
        txn(h2b, [ins('a', { id: '2', v: 'h2' })], { history: 'H2' }),
        txn(h2c, [ins('a', { id: '3', v: 'h2' })], { history: 'H2' }),
      );
    });

    it('a copy restored without a checkpoint is placed in the source history of now, which the checkpoint stores', async () => {
      // Before the fix: H1's 0/90000 is above 0/2100, so the stream "no longer reached back" to it.
      const r = await rewind(h2b);
      expect(r).toMatchObject({ lsn: formatLsn(BigInt(h2b)), offset: 4, next: formatLsn(BigInt(h2c)), history: 'H2' });
      expect(await log.rows(`SELECT lsn::text, stream_offset::int, history FROM pgferry.progress WHERE replica = 'r'`)).toEqual([{ lsn: '0/2100', stream_offset: 4, history: 'H2' }]);
      // Applied from there: H2's transaction after the target only.
      expect((await log.apply()).txns).toBe(1);
      expect(await log.rows('SELECT id::int FROM a')).toEqual([{ id: 3 }]);
      expect(await log.rows('SELECT count(*)::int AS n FROM b')).toEqual([{ n: 0 }]);
    });

    it("a target is read in the replica's own history (its checkpoint's), not compared with another's positions", async () => {
      await log.cluster.withClient(log.db, async (c) => {
        await ensureTargetSchema(c);
        await ProgressStore.set(c, 'r', log.source, { lsn: formatLsn(BigInt(h1a)), offset: 1, history: 'H1' });
      });
      const r = await rewind(h1a);
      expect(r).toMatchObject({ offset: 1, next: formatLsn(BigInt(h1b)), history: 'H1' });
      expect(await log.rows(`SELECT history FROM pgferry.progress WHERE replica = 'r'`)).toEqual([{ history: 'H1' }]);
    });

    it("refuses a target past the end of the replica's history (it is a position of another one), changing nothing", async () => {
      await log.cluster.withClient(log.db, async (c) => {
        await ensureTargetSchema(c);
        await ProgressStore.set(c, 'r', log.source, { lsn: formatLsn(BigInt(h1a)), offset: 1, history: 'H1' });
      });
      const err = await rewind(0x95000).catch((e) => e);
      expect(err).toBeInstanceOf(GapError);
      expect(String(err.message)).toMatch(/position 0\/95000 is not in source history H1, which replica 'r' belongs to: the stream holds H1 up to 0\/90100 \(offset 2\), then continues with H2 at offset 3; nothing was changed\. .*pgferry replica resync r/);
      expect(await log.rows(`SELECT lsn::text, stream_offset::int, history FROM pgferry.progress WHERE replica = 'r'`)).toEqual([{ lsn: '0/90000', stream_offset: 1, history: 'H1' }]);
    });

    it('refuses a history the stream does not hold', async () => {
      const err = await rewind(h2b, 'H3').catch((e) => e);
      expect(err).toBeInstanceOf(GapError);
      expect(String(err.message)).toMatch(/the stream of source '\w+' holds no transaction of source history H3, which replica 'r' belongs to; nothing was changed/);
    });
  });
});
