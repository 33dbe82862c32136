/**
 * Bulk updates and deletes through a staging table (src/apply/staging.ts,
 * issue 27 item 2) against a real stream and a real replica: long runs of
 * one transaction's updates and deletes, and a window's net change of many
 * keys, land exactly as the source left them — every value as the source
 * printed it (tabs, newlines, backslashes, `\N` as text, NULLs, arrays,
 * jsonb, numeric scale, blank-padded char), on a table whose name and
 * composite key are full of quotes and spaces; the staging table is what
 * carried them; a row the replica refuses inside a staged run (on the set
 * statement, or a value on COPY) stops the replica naming that row, with
 * nothing of its transaction applied; no staging table outlives its
 * transaction (a DBA can drop a type while apply's connection is open); a
 * role without the TEMP privilege, or whose staging table is refused after
 * the check, gets the VALUES form, with the same result.
 */
import { describe, expect, it } from 'vitest';
import pg from 'pg';
import type { Change, RelationInfo, Row, TxnMessage } from '../../src/change';
import { relKey } from '../../src/change';
import { RejectedChangeError } from '../../src/errors';
import { applyStaged, stagedSets } from '../../src/apply/staging';
import { logger } from '../../src/logger';
import { CraftedLog, useCraftedLog, txn } from '../helpers/crafted-log';

const WEIRD: RelationInfo = {
  schema: 'public',
  table: 'we"ird tab',
  identity: 'default',
  columns: [
    { name: 'k 1', type: 'integer', key: true },
    { name: 'K"2', type: 'text', key: true },
    { name: 't', type: 'text', key: false },
    { name: 'n', type: 'numeric(12,2)', key: false },
    { name: 'arr', type: 'integer[]', key: false },
    { name: 'j', type: 'jsonb', key: false },
    { name: 'c', type: 'character(3)', key: false },
  ],
};
const PLAIN: RelationInfo = {
  schema: 'public',
  table: 'plain',
  identity: 'default',
  columns: [
    { name: 'id', type: 'bigint', key: true },
    { name: 'v', type: 'text', key: false },
  ],
};
const W = relKey('public', WEIRD.table);
const P = relKey('public', PLAIN.table);
const RELS = { rels: [WEIRD, PLAIN] };
const SCHEMA = `
  CREATE TABLE "we""ird tab" ("k 1" int, "K""2" text, t text, n numeric(12,2), arr int[], j jsonb, c char(3), PRIMARY KEY ("k 1", "K""2"));
  CREATE TABLE plain (id bigint PRIMARY KEY, v text CHECK (v IS DISTINCT FROM 'bad'));
`;

/** Values as PostgreSQL prints them (so the replica's text output must equal them), the awkward ones included. */
const TEXTS = ['plain', 'tab\there', 'new\nline', 'back\\slash', '\\N', 'cr\rlf', 'quote"s \'both\'', '', null];
const weirdRow = (i: number, gen: number): Row => ({
  'k 1': String(i % 97),
  'K"2': `key "${Math.floor(i / 97)}"\t${i}`,
  t: TEXTS[(i + gen) % TEXTS.length],
  n: (i + gen) % 11 === 0 ? null : `${i}.${String(gen % 100).padStart(2, '0')}`,
  arr: `{${i},${gen},NULL}`,
  j: `{"g": ${gen}, "s": "x\\ty"}`,
  c: `${String.fromCharCode(97 + (gen % 26))}  `,
});
const keyOf = (r: Row) => ({ 'k 1': r['k 1'], 'K"2': r['K"2'] });

/** The replica's rows of the weird table, each value in its text form. */
const WEIRD_ROWS = `SELECT "k 1"::text AS "k 1", "K""2", t, n::text AS n, arr::text AS arr, j::text AS j, c FROM "we""ird tab"`;
const order = (r: Row) => JSON.stringify([Number(r['k 1']), r['K"2']]);
const sortRows = (rows: Row[]) => [...rows].sort((a, b) => (order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0));


/** A transaction of many changes, sent as a large one is: in two chunks. */
function chunked(at: number, changes: Change[]): TxnMessage[] {
  const half = Math.floor(changes.length / 2);
  return [txn(at, changes.slice(0, half), { ...RELS, seq: 0, last: false }), txn(at, changes.slice(half), { ...RELS, seq: 1, last: true })];
}

describe('bulk updates and deletes through a staging table', () => {
  let log: CraftedLog;
  useCraftedLog(SCHEMA, (l) => (log = l));

  const weirdRows = async () => sortRows((await log.rows(WEIRD_ROWS)) as Row[]);

  /** Apply until caught up on one connection; the number of sets it applied through a staging table. */
  const applyAll = async (o: { client?: pg.Client; maxChanges?: number } = {}) => {
    const c = o.client ?? (await log.client());
    try {
      for (let i = 0; i < 100; i++) if ((await log.apply({ client: c, maxChanges: o.maxChanges })).caughtUp) break;
      return stagedSets(c);
    } finally {
      if (!o.client) await c.end();
    }
  };

  it('long runs of updates and deletes (one of them over 5,000 rows) land exactly, every value as the source printed it', async () => {
    const n = 400;
    const rows = Array.from({ length: n }, (_, i) => weirdRow(i, 0));
    const updated = rows.map((r, i) => weirdRow(i, 1 + (i % 3)));
    const kept = updated.filter((_, i) => i % 4 !== 0);
    const plain = Array.from({ length: 6200 }, (_, i) => ({ id: String(i + 1), v: `v${i}` }));
    await log.publish(
      ...chunked(0x1000, [...rows.map((r): Change => ({ op: 'insert', rel: W, new: r })), ...plain.map((r): Change => ({ op: 'insert', rel: P, new: r }))]),
      // Updates writing every non-key column (runs of one transaction: keys unchanged, each row once).
      ...chunked(0x2000, [
        ...updated.map((r): Change => ({ op: 'update', rel: W, old: keyOf(r), new: r })),
        ...plain.map((r): Change => ({ op: 'update', rel: P, old: { id: r.id }, new: { id: r.id, v: `${r.v}\tnew` } })),
      ]),
      // Deletes of a quarter of one table and all but 10 rows of the other.
      ...chunked(0x3000, [
        ...updated.filter((_, i) => i % 4 === 0).map((r): Change => ({ op: 'delete', rel: W, old: keyOf(r) })),
        ...plain.slice(10).map((r): Change => ({ op: 'delete', rel: P, old: { id: r.id } })),
      ]),
    );
    // Runs are cut at chunk boundaries: the updates' first chunk holds the 400 weird rows and 2,900 plain
    // ones, the second 3,300 plain; the deletes' first chunk 100 weird and 3,045 plain, the second 3,145.
    // Six sets, each staged (a refused set statement would have gone row by row, and not count).
    expect(await applyAll(), 'sets applied through a staging table').toBe(6);
    expect(await weirdRows()).toEqual(sortRows(kept));
    expect(await log.rows('SELECT id::text, v FROM plain ORDER BY plain.id')).toEqual(plain.slice(0, 10).map((r) => ({ id: r.id, v: `${r.v}\tnew` })));
  });

  it("a window's net change of many keys goes through the staging table, with the same result as change by change", async () => {
    const n = 300;
    const initial = Array.from({ length: n }, (_, i) => weirdRow(i, 0));
    const txns: TxnMessage[] = [txn(0x1000, initial.map((r): Change => ({ op: 'insert', rel: W, new: r })), RELS)];
    const final = new Map(initial.map((r) => [JSON.stringify(keyOf(r)), r]));
    // Small transactions, each updating three rows and deleting one: every key touched at most a few times.
    for (let t = 0; t < 150; t++) {
      const changes: Change[] = [];
      for (const i of [t, t + 150, (t * 7) % n]) {
        const key = JSON.stringify(keyOf(initial[i]));
        if (!final.has(key)) continue;
        const next = weirdRow(i, t + 5);
        changes.push({ op: 'update', rel: W, old: keyOf(next), new: next });
        final.set(key, next);
      }
      if (t % 10 === 0 && final.has(JSON.stringify(keyOf(initial[(t * 13 + 1) % n])))) {
        changes.push({ op: 'delete', rel: W, old: keyOf(initial[(t * 13 + 1) % n]) });
        final.delete(JSON.stringify(keyOf(initial[(t * 13 + 1) % n])));
      }
      txns.push(txn(0x2000 + t * 0x100, changes, RELS));
    }
    await log.publish(txns[0]);
    expect((await log.apply()).txns).toBe(1); // the rows, before the window that updates them
    await log.publish(...txns.slice(1));
    const c = await log.client();
    try {
      let net = 0;
      for (let i = 0; i < 100; i++) {
        const r = await log.apply({ client: c });
        net += r.netTxns ?? 0;
        if (r.caughtUp) break;
      }
      expect(net, 'transactions applied as net change').toBeGreaterThan(140);
      expect(stagedSets(c), 'sets applied through a staging table (the updates; 15 deletes go as VALUES)').toBeGreaterThan(0);
    } finally {
      await c.end();
    }
    expect(await weirdRows()).toEqual(sortRows([...final.values()]));
    // The same log, change by change: the same table.
    await log.cluster.withClient(log.db, (c) => c.query(`TRUNCATE "we""ird tab"; DELETE FROM pgferry.progress`));
    const c2 = await log.client();
    try {
      for (let i = 0; i < 100; i++) if ((await log.apply({ client: c2, netChange: false })).caughtUp) break;
    } finally {
      await c2.end();
    }
    expect(await weirdRows()).toEqual(sortRows([...final.values()]));
  });

  it('a row the replica refuses inside a staged run stops the replica naming it, with nothing of its transaction applied', async () => {
    const plain = Array.from({ length: 300 }, (_, i) => ({ id: String(i + 1), v: `v${i}` }));
    await log.publish(
      ...chunked(0x1000, plain.map((r): Change => ({ op: 'insert', rel: P, new: r }))),
      ...chunked(0x2000, plain.map((r): Change => ({ op: 'update', rel: P, old: { id: r.id }, new: { id: r.id, v: r.id === '150' ? 'bad' : 'good' } }))),
    );
    const err = await log.apply().catch((e) => e);
    expect(err).toBeInstanceOf(RejectedChangeError);
    expect(String(err.message)).toMatch(/^replica 'r': update on public\.plain key \{"id":"150"\} at source position 0\/2000 was rejected: .*plain_v_check/);
    expect(await log.rows(`SELECT count(*)::int AS n, count(*) FILTER (WHERE v = 'good')::int AS good FROM plain`)).toEqual([{ n: 300, good: 0 }]);
    expect(await log.rows(`SELECT lsn::text FROM pgferry.progress WHERE replica = 'r'`)).toEqual([{ lsn: '0/1000' }]);
  });

  it("keeps no staging table past its transaction: a DBA may drop a type of the replica's while apply's connection stays open", async () => {
    await log.reset(`${SCHEMA} CREATE TYPE mood AS ENUM ('ok', 'meh'); CREATE TABLE moods (id bigint PRIMARY KEY, m mood);`);
    const MOODS: RelationInfo = { schema: 'public', table: 'moods', identity: 'default', columns: [{ name: 'id', type: 'bigint', key: true }, { name: 'm', type: 'mood', key: false }] };
    const M = relKey('public', 'moods');
    const ids = Array.from({ length: 200 }, (_, i) => String(i + 1)); // two chunks of 100: two staged sets
    await log.publish(
      ...chunked(0x1000, ids.map((id): Change => ({ op: 'insert', rel: M, new: { id, m: 'ok' } }))).map((m) => ({ ...m, relations: { [M]: MOODS } })),
      ...chunked(0x2000, ids.map((id): Change => ({ op: 'update', rel: M, old: { id }, new: { id, m: 'meh' } }))).map((m) => ({ ...m, relations: { [M]: MOODS } })),
    );
    const c = await log.client();
    try {
      for (let i = 0; i < 100; i++) if ((await log.apply({ client: c })).caughtUp) break;
      expect(stagedSets(c)).toBe(2);
      expect(await log.rows(`SELECT count(*)::int AS n FROM moods WHERE m = 'meh'`)).toEqual([{ n: 200 }]);
      await log.cluster.withClient(log.db, (s) => s.query(`ALTER TABLE moods ALTER COLUMN m TYPE text; DROP TYPE mood`));
    } finally {
      await c.end();
    }
  });

  it('a value the replica refuses on COPY into the staging table stops the replica naming its row, as the VALUES form would', async () => {
    const rows = Array.from({ length: 100 }, (_, i) => weirdRow(i, 0));
    await log.publish(...chunked(0x1000, rows.map((r): Change => ({ op: 'insert', rel: W, new: r }))));
    expect((await log.apply()).txns).toBe(1);
    const updates = rows.map((r, i) => ({ ...weirdRow(i, 1), n: i === 70 ? 'not a number' : '1.00' }));
    await log.publish(...chunked(0x2000, updates.map((r): Change => ({ op: 'update', rel: W, old: keyOf(r), new: r }))));
    const err = await log.apply().catch((e) => e);
    expect(err).toBeInstanceOf(RejectedChangeError);
    expect(String(err.message)).toMatch(/^replica 'r': update on public\."we""ird tab" key .*"k 1":"70".* at source position 0\/2000 was rejected: invalid input syntax for type numeric/);
    expect(await weirdRows()).toEqual(sortRows(rows));
  });

  it('a staging table refused after the privilege check (TEMP revoked since) sends that connection to the VALUES form, once, with the same result', async () => {
    const plain = Array.from({ length: 200 }, (_, i) => ({ id: String(i + 1), v: `v${i}` }));
    await (await log.client()).end(); // pgferry's schema, to grant on
    await log.cluster.withClient(log.db, (c) =>
      c.query(`
        DROP ROLE IF EXISTS latetemp; CREATE ROLE latetemp LOGIN;
        GRANT USAGE ON SCHEMA public, pgferry TO latetemp;
        GRANT ALL ON ALL TABLES IN SCHEMA public, pgferry TO latetemp;`),
    );
    const warnings: string[] = [];
    const spy = Object.assign(Object.create(logger), { warn: (_o: unknown, msg: string) => warnings.push(msg) });
    const c = new pg.Client({ connectionString: log.cluster.url(log.db, 'latetemp') });
    await c.connect();
    try {
      // The check (TEMP granted) is made and kept by the connection; no temporary table exists yet.
      const unknownTypes = new Map<string, string>();
      const one = { op: 'update' as const, rel: PLAIN, keys: ['id'], cols: ['v'], rows: [{ old: { id: '1' }, new: { id: '1', v: 'x' } }] };
      expect(await applyStaged(c, one, unknownTypes, spy)).toBe(false);
      await log.cluster.withClient(log.db, (s) => s.query(`REVOKE TEMP ON DATABASE ${log.db} FROM PUBLIC`));
      await log.publish(
        ...chunked(0x1000, plain.map((r): Change => ({ op: 'insert', rel: P, new: r }))),
        ...chunked(0x2000, plain.map((r): Change => ({ op: 'update', rel: P, old: { id: r.id }, new: { id: r.id, v: `${r.v}+` } }))),
      );
      await c.query('BEGIN');
      const types = new Map([['id', 'bigint'], ['v', 'text']]);
      const set = { ...one, rows: plain.map((r) => ({ old: { id: r.id }, new: { id: r.id, v: 'never' } })) };
      expect(await applyStaged(c, set, types, spy)).toBe(false); // refused: rolled back to its savepoint, the transaction goes on
      expect(await applyStaged(c, set, types, spy)).toBe(false); // and not asked again
      await c.query('ROLLBACK');
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/refused a temporary staging table \(permission denied.*bound parameters instead/);
      for (let i = 0; i < 100; i++) if ((await log.apply({ client: c })).caughtUp) break;
      expect(stagedSets(c)).toBe(0);
    } finally {
      await c.end();
      await log.cluster.withClient(log.db, (s) => s.query(`GRANT TEMP ON DATABASE ${log.db} TO PUBLIC; DROP OWNED BY latetemp; DROP ROLE latetemp`));
    }
    expect(await log.rows('SELECT id::text, v FROM plain ORDER BY plain.id')).toEqual(plain.map((r) => ({ id: r.id, v: `${r.v}+` })));
  });

  it('a role without the TEMP privilege gets the VALUES form, with the same result', async () => {
    const plain = Array.from({ length: 200 }, (_, i) => ({ id: String(i + 1), v: `v${i}` }));
    await (await log.client()).end(); // pgferry's schema, to grant on
    await log.cluster.withClient(log.db, (c) =>
      c.query(`
        DROP ROLE IF EXISTS notemp; CREATE ROLE notemp LOGIN;
        REVOKE TEMP ON DATABASE ${log.db} FROM PUBLIC;
        GRANT USAGE ON SCHEMA public, pgferry TO notemp;
        GRANT ALL ON ALL TABLES IN SCHEMA public, pgferry TO notemp;`),
    );
    try {
      const c = new pg.Client({ connectionString: log.cluster.url(log.db, 'notemp') });
      await c.connect();
      try {
        const types = new Map([['id', 'bigint'], ['v', 'text']]);
        const set = { op: 'update' as const, rel: PLAIN, keys: ['id'], cols: ['v'], rows: [{ old: { id: '1' }, new: { id: '1', v: 'x' } }] };
        expect(await applyStaged(c, set, types, logger)).toBe(false);
        await log.publish(
          ...chunked(0x1000, plain.map((r): Change => ({ op: 'insert', rel: P, new: r }))),
          ...chunked(0x2000, plain.map((r): Change => ({ op: 'update', rel: P, old: { id: r.id }, new: { id: r.id, v: `${r.v}\\again` } }))),
          ...chunked(0x3000, plain.slice(0, 100).map((r): Change => ({ op: 'delete', rel: P, old: { id: r.id } }))),
        );
        expect(await applyAll({ client: c }), 'sets applied through a staging table').toBe(0);
      } finally {
        await c.end();
      }
      expect(await log.rows('SELECT id::text, v FROM plain ORDER BY plain.id')).toEqual(plain.slice(100).map((r) => ({ id: r.id, v: `${r.v}\\again` })));
    } finally {
      await log.cluster.withClient(log.db, (c) => c.query(`GRANT TEMP ON DATABASE ${log.db} TO PUBLIC; DROP OWNED BY notemp; DROP ROLE notemp`));
    }
  });
});
