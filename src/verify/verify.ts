/**
 * `pgferry verify`: source and replica compared by content. Each table's rows
 * are spread over buckets by a hash of their key (the whole row for a table
 * without one); per bucket both sides give a row count and a sum of row
 * hashes. Only buckets that differ are read row by row, to name the keys.
 *
 * The two sides are read at different instants, so on a busy source a
 * difference may just be lag: differing keys are settled (see `settle`)
 * against a source snapshot the replica is known to have caught up with.
 */
import type pg from 'pg';
import { relLabel } from '../change';
import type { TableRef } from '../tables';
import { compareLsn, ZERO_LSN } from '../lsn';
import type { SourcePoint } from '../capture/contract';
import { ident, qualified } from '../pg';
import { ProgressStore } from '../apply/progress-store';

export interface TableVerdict {
  table: string;
  sourceRows: number;
  replicaRows: number;
  /** Keys (as text) whose rows differ; `missing` = only on the source, `extra` = only on the replica. */
  missing: string[];
  extra: string[];
  changed: string[];
  /** Keys written on the source during every look: not compared, not counted as differences. */
  moving: string[];
}

export interface VerifyOptions {
  source: pg.ClientBase;
  replica: pg.ClientBase;
  replicaName: string;
  tables: TableRef[];
  /** Re-checks of differing keys after the replica catches up. */
  rounds?: number;
  /** How long the replica's position must stand still to count as caught up with an idle source. */
  catchUpMs?: number;
  buckets?: number;
  /** The source's snapshot now and the log position covering it (the capture mode's: a WAL LSN, or a trigger-capture tick). */
  sourcePoint: (c: pg.ClientBase) => Promise<SourcePoint>;
  /** Whether capture has put every transaction of the point's snapshot in the stream (the capture mode's). */
  capturedThrough: (c: pg.ClientBase, point: SourcePoint) => Promise<boolean>;
  /** The commit position of the newest transaction in the change log (null: it holds none); absent: the log cannot be read. */
  newestInLog?: () => Promise<string | null>;
}

/**
 * The columns that identify a row of a table: its primary key, else its
 * replica identity index; none for a table without either.
 */
const KEY_COLUMNS = `
SELECT a.attname AS column_name
FROM pg_catalog.pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS x(attnum, n)
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = x.attnum
WHERE i.indrelid = $1::regclass
  AND i.indexrelid = (SELECT ix.indexrelid FROM pg_catalog.pg_index ix
                      WHERE ix.indrelid = $1::regclass AND (ix.indisprimary OR ix.indisreplident)
                      ORDER BY ix.indisprimary DESC LIMIT 1)
ORDER BY x.n`;

/**
 * Rows of the given keys, with whether the transaction that wrote each row
 * had committed in snapshot $2 (a pg_current_snapshot() taken earlier). The
 * row's xmin has 32 bits: it is widened to the 64-bit id nearest the
 * snapshot's xmax (ids 0–2 are frozen or bootstrap rows: always settled).
 * `key`, `row` and `table` are SQL text pgferry builds from escaped identifiers.
 */
const verifyRows = (key: string, row: string, table: string, rowsWanted: string) => `
WITH snap AS (
  SELECT $2::pg_snapshot AS s, pg_catalog.pg_snapshot_xmax($2::pg_snapshot)::text::bigint AS xmax
)
SELECT ${key} AS k,
       hashtextextended(${row}, 0)::text AS h,
       CASE WHEN x.xid32 < 3 THEN true
            ELSE pg_catalog.pg_visible_in_snapshot(greatest(3, snap.xmax + CASE WHEN x.d > 2147483648 THEN x.d - 4294967296
                                                                         WHEN x.d < -2147483648 THEN x.d + 4294967296
                                                                         ELSE x.d END)::text::xid8, snap.s)
       END AS settled
FROM ${table} t
CROSS JOIN snap
CROSS JOIN LATERAL (SELECT t.xmin::text::bigint AS xid32, t.xmin::text::bigint - (snap.xmax & 4294967295) AS d) x
WHERE ${rowsWanted} AND ${key} = ANY($1::text[])`;

/** Key columns of each table on the source: primary key, else replica identity index, else none (whole row). */
async function keyColumns(c: pg.ClientBase, t: TableRef): Promise<string[]> {
  const { rows } = await c.query<{ column_name: string }>(KEY_COLUMNS, [qualified(t.schema, t.table)]);
  return rows.map((r) => r.column_name);
}

interface Shape {
  table: TableRef;
  /** SQL text of the key, and of the compared row (published columns, in the source's order). */
  key: string;
  row: string;
  /** The rows compared: on the source, those the publication's row filter sends; on the replica, all. */
  rows: string;
}

/** The compared shape of a table on one side: the source's applies the publication's row filter. */
function shapeOf(t: TableRef, keys: string[], side: 'source' | 'replica'): Shape {
  const cols = (t.columns ?? []).map((c) => `t.${ident(c.name)}`);
  const row = `ROW(${cols.join(', ')})::text`;
  const rows = side === 'source' && t.rowFilter ? `(${t.rowFilter})` : 'true';
  return { table: t, key: keys.length ? `ROW(${keys.map((k) => `t.${ident(k)}`).join(', ')})::text` : row, row, rows };
}

async function bucketSums(c: pg.ClientBase, s: Shape, buckets: number): Promise<Map<number, string>> {
  const { rows } = await c.query(
    `SELECT abs(hashtextextended(${s.key}, 0) % ${buckets}) AS b, count(*)::text || ':' || sum(hashtextextended(${s.row}, 0))::text AS v
     FROM ${qualified(s.table.schema, s.table.table)} t WHERE ${s.rows} GROUP BY 1`,
  );
  return new Map(rows.map((r) => [Number(r.b), r.v as string]));
}

/** key → row hashes (several for duplicate rows of a table without a key), of the rows matching `where` ($1). */
async function rowHashes(c: pg.ClientBase, s: Shape, where: string, param: unknown): Promise<Map<string, string[]>> {
  const { rows } = await c.query(`SELECT ${s.key} AS k, hashtextextended(${s.row}, 0)::text AS h FROM ${qualified(s.table.schema, s.table.table)} t WHERE ${s.rows} AND ${where}`, [param]);
  const out = new Map<string, string[]>();
  for (const r of rows) out.set(r.k, [...(out.get(r.k) ?? []), r.h].sort());
  return out;
}

const inBuckets = (c: pg.ClientBase, s: Shape, buckets: number, which: number[]) =>
  rowHashes(c, s, `abs(hashtextextended(${s.key}, 0) % ${buckets}) = ANY($1::int[])`, which);

const withKeys = (c: pg.ClientBase, s: Shape, keys: string[]) => rowHashes(c, s, `${s.key} = ANY($1::text[])`, keys);

/**
 * The given keys' rows on the source, each with whether the transaction that
 * wrote it had committed when `snapshot` was taken (pg_current_snapshot()).
 * A row written later may simply not have reached the replica yet.
 */
async function sourceRowsAt(c: pg.ClientBase, s: Shape, keys: string[], snapshot: string): Promise<Map<string, { h: string[]; settled: boolean }>> {
  const { rows } = await c.query<{ k: string; h: string; settled: boolean | string }>(verifyRows(s.key, s.row, qualified(s.table.schema, s.table.table), s.rows), [keys, snapshot]);
  const out = new Map<string, { h: string[]; settled: boolean }>();
  for (const r of rows) {
    const prev = out.get(r.k);
    out.set(r.k, { h: [...(prev?.h ?? []), r.h].sort(), settled: (prev?.settled ?? true) && (r.settled === true || r.settled === 't') });
  }
  return out;
}

function diff(src: Map<string, string[]>, dst: Map<string, string[]>): string[] {
  const keys: string[] = [];
  for (const [k, h] of src) if (dst.get(k)?.join() !== h.join()) keys.push(k);
  for (const k of dst.keys()) if (!src.has(k)) keys.push(k);
  return keys;
}

/** Rows counted by the bucket sums ("count:hash" per bucket). */
function rowsOf(sums: Map<number, string>): number {
  let n = 0;
  for (const v of sums.values()) n += Number(v.split(':')[0]);
  return n;
}

/**
 * Wait until the replica has applied every transaction the source had
 * committed at `point`. An idle source never gets a commit at the point
 * itself, so the replica is also caught up when its position stands still
 * and either
 * - capture has put every transaction of the point's snapshot in the stream
 *   (capturedThrough, asked after `quietMs` of standing still) and the
 *   replica holds the newest transaction the stream has now: exact, whatever
 *   the replica's batches or capture's pauses take; or
 * - nothing has moved for 5 × `quietMs`: capture is stopped, or the log
 *   cannot be read. (Standing still for `quietMs` alone used to be enough,
 *   and read a busy source's lag as missing rows: an apply batch or a
 *   capture pass can take longer than that on a loaded machine.)
 * A replica that keeps moving is waited for (up to `maxMs`).
 */
export async function catchUp(
  o: Pick<VerifyOptions, 'source' | 'replica' | 'replicaName' | 'capturedThrough' | 'newestInLog'>,
  point: SourcePoint,
  quietMs: number,
  maxMs = 20_000,
): Promise<boolean> {
  const giveUp = Date.now() + maxMs;
  let last = '';
  let since = Date.now();
  let asked = 0;
  while (Date.now() < giveUp) {
    const at = (await ProgressStore.get(o.replica, o.replicaName))?.lsn ?? ZERO_LSN;
    if (compareLsn(at, point.lsn) >= 0) return true;
    const now = Date.now();
    if (at !== last) {
      last = at;
      since = now;
    } else if (now - since >= 5 * quietMs) {
      return true;
    } else if (now - since >= quietMs && now - asked >= quietMs && o.newestInLog) {
      asked = now;
      if (await o.capturedThrough(o.source, point)) {
        const newest = await o.newestInLog(); // read after capture is past the point: it covers the point's transactions
        if (newest === null || compareLsn(at, newest) >= 0) return true;
      }
    }
    await new Promise((res) => setTimeout(res, 100));
  }
  return false; // still applying: too far behind to judge in this round
}

/**
 * Settle the differing keys: in each round, note the source's snapshot and
 * position, let the replica catch up to it, then read the replica and then
 * the source. A key whose source row was written before that snapshot must
 * match — the replica holds everything up to it, and nothing has touched the
 * row since — so a mismatch there is a real difference. A key written later
 * is still moving: look again next round. Keys left open after the last
 * round are reported as moving, never as differences.
 */
async function settle(o: VerifyOptions, s: Shape, r: Shape, keys: string[], rounds: number): Promise<{ missing: string[]; extra: string[]; changed: string[]; moving: string[] }> {
  const found = { missing: [] as string[], extra: [] as string[], changed: [] as string[], moving: [] as string[] };
  let open = keys;
  for (let round = 0; round < rounds && open.length; round++) {
    const at = await o.sourcePoint(o.source);
    if (!(await catchUp(o, at, o.catchUpMs ?? 1000))) continue;
    const dst = await withKeys(o.replica, r, open);
    const src = await sourceRowsAt(o.source, s, open, at.snap);
    const next: string[] = [];
    for (const k of open) {
      const a = src.get(k);
      const b = dst.get(k);
      if (a && b && a.h.join() === b.join()) continue; // equal now: it was lag
      if (a && !a.settled) next.push(k); // written after the snapshot: still moving
      else if (a && !b) found.missing.push(k);
      else if (a && b) found.changed.push(k);
      else if (round === rounds - 1) found.extra.push(k); // gone from the source: a delete in flight, unless it stays
      else next.push(k);
    }
    open = next;
  }
  found.moving = open.filter((k) => !found.extra.includes(k));
  for (const list of Object.values(found)) list.sort();
  return found;
}

export async function verify(o: VerifyOptions): Promise<TableVerdict[]> {
  const buckets = o.buckets ?? 256;
  for (const c of [o.source, o.replica]) await c.query(`SET TimeZone = 'UTC'`);
  const verdicts: TableVerdict[] = [];
  for (const t of o.tables) {
    const keys = await keyColumns(o.source, t);
    const s = shapeOf(t, keys, 'source');
    const r = shapeOf(t, keys, 'replica');
    const [a, b] = await Promise.all([bucketSums(o.source, s, buckets), bucketSums(o.replica, r, buckets)]);
    const differing = [...new Set([...a.keys(), ...b.keys()])].filter((k) => a.get(k) !== b.get(k));
    let found = { missing: [] as string[], extra: [] as string[], changed: [] as string[], moving: [] as string[] };
    if (differing.length) {
      const [sr, dr] = await Promise.all([inBuckets(o.source, s, buckets, differing), inBuckets(o.replica, r, buckets, differing)]);
      found = await settle(o, s, r, diff(sr, dr), o.rounds ?? 3);
    }
    verdicts.push({ table: relLabel(t), sourceRows: rowsOf(a), replicaRows: rowsOf(b), ...found });
  }
  return verdicts;
}
