import type pg from 'pg';

/**
 * A seeded random workload for differential testing: inserts, updates
 * (including primary-key changes), deletes, truncates and rolled-back
 * transactions of random sizes over tables with keys, without keys (FULL
 * identity) and with awkward values. The same seed replays the same workload.
 */
export const RANDOM_SCHEMA = `
  CREATE TABLE r_items (id int PRIMARY KEY, name text, qty int, price numeric(10,2), tags text[], meta jsonb, at timestamptz, blob bytea);
  CREATE TABLE r_events (id bigserial PRIMARY KEY, item_id int, kind text NOT NULL, payload json, f float8);
  CREATE TABLE r_nokey (a int, b text, d date);
  ALTER TABLE r_nokey REPLICA IDENTITY FULL;
`;
export const RANDOM_TABLES = ['r_items', 'r_events', 'r_nokey'];

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function runRandomWorkload(c: pg.Client, seed: number, txns: number): Promise<{ committed: number; changes: number }> {
  const rnd = mulberry32(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const pick = <T>(xs: T[]): T => xs[int(xs.length)];
  const texts = ['', 'plain', "it's", 'say "hi"', 'back\\slash', 'comma, inside', 'naïve 日本', 'tab\there', null];
  const maybe = <T>(v: T): T | null => (rnd() < 0.15 ? null : v);
  let nextId = 100_000;
  let committed = 0;
  let changes = 0;

  for (let t = 0; t < txns; t++) {
    const size = rnd() < 0.1 ? 50 + int(300) : 1 + int(8);
    await c.query('BEGIN');
    for (let i = 0; i < size; i++) {
      const op = int(100);
      if (op < 35) {
        await c.query(
          'INSERT INTO r_items VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING',
          [int(400), pick(texts), maybe(int(1000) - 500), maybe((rnd() * 10000).toFixed(2)), maybe([pick(texts), pick(texts)]), maybe(JSON.stringify({ k: int(10), s: pick(texts) })), maybe(new Date(1.7e12 + int(1e10)).toISOString()), maybe(Buffer.from([int(256), int(256)]))],
        );
      } else if (op < 55) {
        await c.query('UPDATE r_items SET qty = $2, name = $3, meta = $4 WHERE id = $1', [int(400), maybe(int(100)), pick(texts), maybe(JSON.stringify({ u: int(5) }))]);
      } else if (op < 60) {
        await c.query('UPDATE r_items SET id = $2 WHERE id = $1', [int(400), nextId++]); // primary key change
      } else if (op < 68) {
        await c.query('DELETE FROM r_items WHERE id = $1', [int(400)]);
      } else if (op < 82) {
        await c.query('INSERT INTO r_events (item_id, kind, payload, f) VALUES ($1, $2, $3, $4)', [int(400), pick(['a', 'b', 'c']), maybe(`{"n": ${int(9)},  "x": "${pick(['', 'y'])}"}`), pick([0, -0, 1.5, Number.NaN, Infinity, 1e-300])]);
      } else if (op < 86) {
        await c.query('DELETE FROM r_events WHERE id IN (SELECT id FROM r_events ORDER BY random() LIMIT 3)');
      } else if (op < 93) {
        await c.query('INSERT INTO r_nokey VALUES ($1, $2, $3)', [maybe(int(5)), maybe(pick(texts)), maybe('2026-01-0' + (1 + int(9)))]);
      } else if (op < 97) {
        await c.query('UPDATE r_nokey SET b = $2 WHERE ctid = (SELECT ctid FROM r_nokey WHERE a IS NOT DISTINCT FROM $1 LIMIT 1)', [maybe(int(5)), maybe(pick(texts))]);
      } else if (op < 99) {
        await c.query('DELETE FROM r_nokey WHERE ctid = (SELECT ctid FROM r_nokey WHERE a IS NOT DISTINCT FROM $1 LIMIT 1)', [maybe(int(5))]);
      } else {
        await c.query(rnd() < 0.5 ? 'TRUNCATE r_events' : 'TRUNCATE r_nokey, r_events RESTART IDENTITY');
      }
      changes += 1;
    }
    if (rnd() < 0.08) {
      await c.query('ROLLBACK'); // never replicated
    } else {
      await c.query('COMMIT');
      committed += 1;
    }
  }
  return { committed, changes };
}
