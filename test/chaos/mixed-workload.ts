import pg from 'pg';
import { mulberry32 } from '../helpers/random-workload';

/**
 * The chaos campaign's workload: a seeded mix of what production sources do,
 * each committed transaction inserting one audit row with a unique id (so a
 * replica's audit table shows every lost or doubled transaction):
 * - small OLTP transactions (a counter update, an event insert);
 * - large transactions of many chunks (hundreds to thousands of rows, with
 *   updates of earlier ones, and every other one deleting some by key: long
 *   runs of updates and deletes), some committed while a small transaction on
 *   another connection commits in between (defect A's recipe);
 * - TRUNCATE of a table, refilled in the same transaction;
 * - inserts, updates and deletes on a REPLICA IDENTITY FULL table without a key;
 * - transactions rolled back (their audit rows never exist on the source).
 *
 * Widened (issue 26), each a feature of PGFERRY_CHAOS_FEATURES (default: all),
 * drawn from a generator of its own so the base mix above stays the same
 * draw for draw whichever features are on:
 * - `ddl`: schema changes of `ddl_t` at random moments, also inside large
 *   chunked transactions: ADD/DROP/RENAME COLUMN, int → bigint,
 *   varchar(n) → text, DROP TABLE + CREATE TABLE of the same name, RENAME
 *   TABLE (and back); its rows written through whatever shape it has;
 * - `partitions`: `parts`, range-partitioned by month, under load: partitions
 *   created (and a row put in at once), created standalone and attached,
 *   detached and dropped, and truncated;
 * - `keys`: a DEFERRABLE primary key whose keys shift, reverse and swap (in
 *   bursts, so several moves fall in one apply batch), REPLICA IDENTITY USING
 *   INDEX with identity moves, FULL identity with duplicate rows (one of two
 *   equal rows updated or deleted), a keyless table;
 * - `guc`: an application transaction that sets pgferry's own per-table shape
 *   setting (`SET LOCAL pgferry.shape_<oid>`) before writing (defect 5's recipe);
 * - `join`: `joiner`, written here, re-joins replicas during the load (the campaign runs the `table add`).
 * `stream` (the stream deleted and re-declared) is a fault of the campaign, not workload.
 */
/** Beside the fault suite's audit tables (test/helpers/workload.ts: audit, counters, events). */
export const CHAOS_SCHEMA = `
  CREATE TABLE bulk (id bigserial PRIMARY KEY, batch int NOT NULL, body text NOT NULL, touched int NOT NULL DEFAULT 0);
  CREATE TABLE scratch (id int PRIMARY KEY, v text NOT NULL);
  CREATE TABLE full_t (a int NOT NULL, b text);
  ALTER TABLE full_t REPLICA IDENTITY FULL;
  CREATE TABLE ddl_t (id int PRIMARY KEY, v int NOT NULL DEFAULT 0, code varchar(12), note text);
  CREATE TABLE parts (id bigserial, at date NOT NULL, v int NOT NULL DEFAULT 0, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
  CREATE TABLE parts_2026_01 PARTITION OF parts FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
  CREATE TABLE parts_2026_02 PARTITION OF parts FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
  CREATE TABLE kd (id int PRIMARY KEY DEFERRABLE INITIALLY IMMEDIATE, v text NOT NULL);
  INSERT INTO kd SELECT g, 'k' || g FROM generate_series(1, 40) g;
  -- PostgreSQL takes no deferrable index as replica identity: WAL capture needs FULL to publish kd's updates (trigger capture keys it by its primary key).
  ALTER TABLE kd REPLICA IDENTITY FULL;
  CREATE TABLE ri (a int NOT NULL, b int NOT NULL, v text);
  CREATE UNIQUE INDEX ri_ab ON ri (a, b);
  ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_ab;
  CREATE TABLE dup (a int, b text);
  ALTER TABLE dup REPLICA IDENTITY FULL;
  CREATE TABLE nokey (a int, b text);
  CREATE TABLE joiner (id int PRIMARY KEY, v int NOT NULL, pad text);
  INSERT INTO joiner SELECT g, 0, repeat('j', 50) FROM generate_series(1, 2000) g;
`;
/** The tables compared at the end, as created (MixedWorkload.tables() follows renames). */
export const CHAOS_TABLES = ['audit', 'counters', 'events', 'bulk', 'scratch', 'full_t', 'ddl_t', 'parts', 'kd', 'ri', 'dup', 'nokey', 'joiner'];

export const FEATURES = ['ddl', 'partitions', 'keys', 'guc', 'stream', 'join'] as const;
export type Feature = (typeof FEATURES)[number];

/** The operations of `ddl` and `partitions`, by the names a feature may narrow them to (`ddl=recreate+rename-table`). */
export const DDL_KINDS: Record<string, string> = {
  add: 'add column',
  drop: 'drop column',
  'rename-column': 'rename column',
  bigint: 'int→bigint',
  text: 'varchar→text',
  recreate: 'drop+create table',
  'rename-table': 'rename table',
};
export const PARTITION_OPS = ['create', 'attach', 'detach', 'truncate'] as const;

/**
 * PGFERRY_CHAOS_FEATURES: a comma-separated subset of FEATURES; unset or
 * "all": every one; "none" (or empty): the base mix alone. `ddl` and
 * `partitions` may be narrowed to some of their operations, joined by `+`:
 * `ddl=add+rename-column`, `partitions=truncate+detach` (rows are always written).
 */
export function chaosFeatures(spec = process.env.PGFERRY_CHAOS_FEATURES): Set<Feature> & { ops: Partial<Record<Feature, Set<string>>> } {
  const out = Object.assign(new Set<Feature>(), { ops: {} as Partial<Record<Feature, Set<string>>> });
  if (spec === undefined || spec.trim() === 'all') {
    for (const f of FEATURES) out.add(f);
    return out;
  }
  for (const token of spec.split(',').map((x) => x.trim()).filter((x) => x && x !== 'none')) {
    const [name, sub] = token.split('=');
    if (!(FEATURES as readonly string[]).includes(name)) throw new Error(`PGFERRY_CHAOS_FEATURES: unknown feature ${name}; known: ${FEATURES.join(', ')}, all, none`);
    out.add(name as Feature);
    if (sub === undefined) continue;
    const known: readonly string[] = name === 'ddl' ? Object.keys(DDL_KINDS) : name === 'partitions' ? PARTITION_OPS : [];
    const ops = sub.split('+');
    const bad = ops.filter((o) => !known.includes(o));
    if (bad.length) throw new Error(`PGFERRY_CHAOS_FEATURES: ${name} has no operation ${bad.join(', ')}; known: ${known.join(', ') || 'none'}`);
    out.ops[name as Feature] = new Set(ops);
  }
  return out;
}

const bump = (m: Record<string, number>, k: string, n = 1) => void (m[k] = (m[k] ?? 0) + n);
const q = (name: string) => `"${name.replace(/"/g, '""')}"`;
const month = (i: number) => {
  // i = 0 is 2026-01.
  const y = 2026 + Math.floor(i / 12);
  const m = (i % 12) + 1;
  return `${y}-${String(m).padStart(2, '0')}-01`;
};
const partName = (i: number) => `parts_${month(i).slice(0, 7).replace('-', '_')}`;

interface DdlColumn {
  name: string;
  type: 'int' | 'bigint' | 'varchar' | 'text';
}

export class MixedWorkload {
  committed = 0;
  rolledBack = 0;
  large = 0;
  interleaved = 0;
  errors = 0;
  /** What the widened workload did, by kind (committed only). */
  readonly ddl: Record<string, number> = {};
  readonly partitionOps: Record<string, number> = {};
  readonly keyOps: Record<string, number> = {};
  keyMoves = 0;
  gucSets = 0;
  private stopped = false;
  private done: Promise<void> | null = null;
  private readonly rand: () => number;
  /** The widened workload's own draws: the base mix is the same, draw for draw, whichever features are on. */
  private readonly frand: () => number;
  private readonly features: ReturnType<typeof chaosFeatures>;
  private readonly mode: 'wal' | 'trigger';

  // The source's shape as the workload believes it; re-read from the catalog after any error.
  private ddlName = 'ddl_t';
  private ddlCols: DdlColumn[] = [];
  private ddlNextId = 1;
  private colSeq = 0;
  private months: number[] = [0, 1];
  private nextMonth = 2;
  private kdLo = 1;
  private kdHi = 40;
  private riNext = 1;
  private stale = true;

  constructor(
    private readonly url: string,
    seed: number,
    /** Rows of a large transaction: [min, max). */
    private readonly largeRows: [number, number] = [300, 3000],
    opts: { features?: ReturnType<typeof chaosFeatures>; mode?: 'wal' | 'trigger' } = {},
  ) {
    this.rand = mulberry32(seed);
    this.frand = mulberry32(seed ^ 0x5eed_0026);
    this.features = opts.features ?? chaosFeatures('none');
    this.mode = opts.mode ?? 'wal';
    this.workloadFeatures = (['ddl', 'partitions', 'keys', 'guc', 'join'] as const).filter((f) => this.features.has(f));
  }

  /** The enabled features this workload writes (stream and join's table add are the campaign's faults). */
  private readonly workloadFeatures: Feature[];

  start(): void {
    this.done = this.run();
  }

  /** The source goes quiet (no transaction begins) for `ms`: a fault may want to land on an idle source. */
  private quietUntil = 0;
  quiet(ms: number): void {
    this.quietUntil = Date.now() + ms;
  }

  /** The tables to compare, under their current names (ddl_t may be renamed at the end). */
  tables(): string[] {
    return CHAOS_TABLES.map((t) => (t === 'ddl_t' ? this.ddlName : t));
  }

  private int(lo: number, hi: number): number {
    return lo + Math.floor(this.rand() * (hi - lo));
  }

  private fint(lo: number, hi: number): number {
    return lo + Math.floor(this.frand() * (hi - lo));
  }

  private pick<T>(xs: T[]): T {
    return xs[Math.floor(this.frand() * xs.length)];
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const a = new pg.Client({ connectionString: this.url });
      const b = new pg.Client({ connectionString: this.url });
      a.on('error', () => undefined);
      b.on('error', () => undefined);
      try {
        await a.connect();
        await b.connect();
        while (!this.stopped) {
          if (Date.now() < this.quietUntil) {
            await new Promise((r) => setTimeout(r, 100));
            continue;
          }
          if (this.stale) await this.readShape(a);
          if (this.workloadFeatures.length && this.frand() < 0.3) await this.widened(a);
          else await this.one(a, b);
        }
      } catch {
        // A transaction whose COMMIT got no answer may or may not have committed: the audit compares
        // with the source's own audit table, so either is fine. The shapes are read again.
        this.errors += 1;
        this.stale = true;
        await new Promise((r) => setTimeout(r, 200));
      } finally {
        await a.end().catch(() => undefined);
        await b.end().catch(() => undefined);
      }
    }
  }

  /** What the source holds now: ddl_t's name and columns, the attached partitions of parts, kd's key range. */
  private async readShape(c: pg.Client): Promise<void> {
    const t = await c.query(`SELECT relname FROM pg_class WHERE relname IN ('ddl_t', 'ddl_t_r') AND relkind = 'r' AND relnamespace = 'public'::regnamespace`);
    this.ddlName = (t.rows[0]?.relname as string) ?? 'ddl_t';
    const cols = await c.query(
      `SELECT attname, format_type(atttypid, atttypmod) AS t FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attname NOT IN ('id', 'v') ORDER BY attnum`,
      [this.ddlName],
    );
    this.ddlCols = cols.rows.map((r) => ({
      name: r.attname as string,
      type: String(r.t).startsWith('character varying') ? 'varchar' : r.t === 'integer' ? 'int' : r.t === 'bigint' ? 'bigint' : 'text',
    }));
    this.ddlNextId = Number((await c.query(`SELECT coalesce(max(id), 0) + 1 AS n FROM ${q(this.ddlName)}`)).rows[0].n);
    const parts = await c.query(
      `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'parts'::regclass ORDER BY 1`,
    );
    this.months = parts.rows.map((r) => {
      const [, y, m] = /^parts_(\d{4})_(\d{2})$/.exec(r.relname as string)!;
      return (Number(y) - 2026) * 12 + Number(m) - 1;
    });
    this.nextMonth = Math.max(this.nextMonth, ...this.months.map((m) => m + 1));
    const kd = (await c.query('SELECT min(id) AS lo, max(id) AS hi FROM kd')).rows[0];
    this.kdLo = Number(kd.lo);
    this.kdHi = Number(kd.hi);
    this.riNext = Number((await c.query('SELECT coalesce(max(a), 0) + 1 AS n FROM ri')).rows[0].n);
    this.stale = false;
  }

  private async audit(c: pg.Client): Promise<void> {
    await c.query('INSERT INTO audit VALUES (gen_random_uuid(), $1)', [this.committed + 1]);
  }

  private async one(a: pg.Client, b: pg.Client): Promise<void> {
    const r = this.rand();
    const n = this.committed + 1;
    if (r < 0.7) {
      await a.query('BEGIN');
      await this.audit(a);
      await a.query('UPDATE counters SET v = v + 1 WHERE id = $1', [(n % 10) + 1]);
      await a.query('INSERT INTO events (counter_id, payload) VALUES ($1, $2)', [(n % 10) + 1, JSON.stringify({ n })]);
      await a.query('COMMIT');
      this.committed += 1;
      await new Promise((res) => setTimeout(res, 2));
    } else if (r < 0.76) {
      // Large: many chunks, then a small transaction on the other connection commits first half the time.
      // One in twenty is huge (tens of thousands of rows): capture publishes it for seconds, so faults land inside it.
      const rows = this.rand() < 0.05 ? this.int(20_000, 60_000) : this.int(...this.largeRows);
      await a.query('BEGIN');
      await this.audit(a);
      await a.query("INSERT INTO bulk (batch, body) SELECT $1, repeat(md5(g::text), 4) FROM generate_series(1, $2) g", [n, rows]);
      // A schema change in the middle of a chunked transaction, then rows that need it (ddl_t is not
      // written before it in this transaction: see README, trigger mode's one shape per transaction).
      const ddl = this.features.has('ddl') && this.frand() < 0.4 ? await this.ddlChange(a) : null;
      if (ddl) await this.ddlRow(a);
      await a.query('UPDATE bulk SET touched = touched + 1 WHERE batch = $1 AND id % 7 = 0', [n]);
      // Every other one also deletes by key: with the update above, runs of 43–430 rows (8,500 in a huge one),
      // which apply sends through a staging table from 64 rows on (issue 27, src/apply/staging.ts).
      // Decided by n, not drawn: the base mix stays the same draw for draw.
      if (n % 2 === 0) await a.query('DELETE FROM bulk WHERE batch = $1 AND id % 7 = 3', [n]);
      if (this.rand() < 0.5) {
        await b.query('BEGIN');
        await this.audit(b);
        await b.query('UPDATE counters SET v = v + 1 WHERE id = 1');
        await b.query('COMMIT');
        this.committed += 1;
        this.interleaved += 1;
      }
      await a.query('COMMIT');
      if (ddl) this.committedDdl(ddl);
      this.committed += 1;
      this.large += 1;
    } else if (r < 0.79) {
      await a.query('BEGIN');
      await this.audit(a);
      await a.query('TRUNCATE scratch');
      await a.query("INSERT INTO scratch SELECT g, md5(g::text || $1) FROM generate_series(1, $2) g", [String(n), this.int(1, 50)]);
      await a.query('COMMIT');
      this.committed += 1;
    } else if (r < 0.92) {
      await a.query('BEGIN');
      await this.audit(a);
      const k = this.rand();
      if (k < 0.5) await a.query('INSERT INTO full_t VALUES ($1, $2), ($1, NULL)', [this.int(0, 20), `v${n}`]);
      else if (k < 0.8) await a.query('UPDATE full_t SET b = $2 WHERE a = $1', [this.int(0, 20), `u${n}`]);
      else await a.query('DELETE FROM full_t WHERE a = $1', [this.int(0, 20)]);
      await a.query('COMMIT');
      this.committed += 1;
    } else {
      await a.query('BEGIN');
      await this.audit(a);
      await a.query('UPDATE counters SET v = v - 1000 WHERE id = 2');
      await a.query('ROLLBACK');
      this.rolledBack += 1;
    }
  }

  /** One transaction of an enabled feature (workload features only: stream and join are the campaign's). */
  private async widened(a: pg.Client): Promise<void> {
    const f = this.pick(this.workloadFeatures);
    if (f === 'keys' && this.frand() < 0.3) {
      // A burst: several key moves committed back to back, inside one apply batch window.
      for (let i = this.fint(2, 6); i > 0 && !this.stopped; i--) await this.txn(a, () => this.keyStep(a));
      return;
    }
    await this.txn(a, async () => {
      if (f === 'ddl') {
        if (this.frand() < 0.25) {
          const d = await this.ddlChange(a);
          if (this.frand() < 0.5) await this.ddlRow(a);
          return () => this.committedDdl(d);
        }
        await this.ddlRow(a);
      } else if (f === 'partitions') return this.partitionStep(a);
      else if (f === 'keys') await this.keyStep(a);
      else if (f === 'guc') {
        // An application sets pgferry's own per-transaction shape setting of a captured table, then writes it.
        await a.query(`SELECT set_config('pgferry.shape_' || 'counters'::regclass::oid, '999999', true)`);
        await a.query('UPDATE counters SET v = v + 1 WHERE id = $1', [this.fint(1, 11)]);
        return () => void (this.gucSets += 1);
      } else {
        const id = this.fint(1, 2400);
        const k = this.frand();
        if (k < 0.6) await a.query('INSERT INTO joiner VALUES ($1, 1, $2) ON CONFLICT (id) DO UPDATE SET v = joiner.v + 1', [id, `w${this.committed}`]);
        else await a.query('DELETE FROM joiner WHERE id = $1', [id]);
      }
      return undefined;
    });
  }

  /** BEGIN; audit; body; COMMIT; then what the body returned (its model update) runs: only once committed. */
  private async txn(a: pg.Client, body: () => Promise<(() => void) | undefined | void>): Promise<void> {
    await a.query('BEGIN');
    await this.audit(a);
    const after = await body();
    await a.query('COMMIT');
    this.committed += 1;
    if (after) after();
    await new Promise((res) => setTimeout(res, 2));
  }

  /** A value of a ddl_t column of this type. */
  private value(t: DdlColumn['type']): string | number {
    if (t === 'int') return this.fint(-1000, 1000);
    if (t === 'bigint') return this.frand() < 0.5 ? 5_000_000_000 + this.fint(0, 1000) : this.fint(0, 1000);
    if (t === 'varchar') return `s${this.fint(0, 1e6)}`;
    return `a longer text value ${this.fint(0, 1e9)} past any varchar(12)`;
  }

  /** One DML statement on ddl_t in its current shape. */
  private async ddlRow(a: pg.Client): Promise<void> {
    const k = this.frand();
    const col = this.ddlCols.length ? this.pick(this.ddlCols) : null;
    if (k < 0.5 || this.ddlNextId < 5) {
      const id = this.ddlNextId;
      const cols = ['id', 'v', ...(col ? [col.name] : [])];
      const vals: unknown[] = [id, this.fint(0, 100), ...(col ? [this.value(col.type)] : [])];
      await a.query(`INSERT INTO ${q(this.ddlName)} (${cols.map(q).join(', ')}) VALUES (${vals.map((_, i) => `$${i + 1}`).join(', ')})`, vals);
      this.ddlNextId += 1; // an id used by a rolled-back insert is simply skipped
    } else if (k < 0.85) {
      const id = this.fint(1, this.ddlNextId);
      if (col) await a.query(`UPDATE ${q(this.ddlName)} SET v = v + 1, ${q(col.name)} = $2 WHERE id = $1`, [id, this.value(col.type)]);
      else await a.query(`UPDATE ${q(this.ddlName)} SET v = v + 1 WHERE id = $1`, [id]);
    } else {
      await a.query(`DELETE FROM ${q(this.ddlName)} WHERE id = $1`, [this.fint(1, this.ddlNextId)]);
    }
  }

  /** One schema change of ddl_t (in the caller's transaction); returns its kind and the model after it. */
  private async ddlChange(a: pg.Client): Promise<{ kind: string; name: string; cols: DdlColumn[] }> {
    const cols = this.ddlCols.map((c) => ({ ...c }));
    const t = q(this.ddlName);
    const fresh = () => `c${++this.colSeq}_${this.committed}`;
    const ints = cols.filter((c) => c.type === 'int');
    const varchars = cols.filter((c) => c.type === 'varchar');
    const allowed = this.features.ops.ddl;
    const kinds = ['add', 'add', 'rename-column', 'drop', 'bigint', 'text', 'recreate', 'rename-table'].filter((k) => !allowed || allowed.has(k)).map((k) => DDL_KINDS[k]);
    let kind = this.pick(kinds);
    if ((kind === 'rename column' || kind === 'drop column') && !cols.length) kind = 'add column';
    if (kind === 'int→bigint' && !ints.length) kind = 'add column';
    if (kind === 'varchar→text' && !varchars.length) kind = 'add column';
    let name = this.ddlName;
    if (kind === 'add column') {
      const c: DdlColumn = { name: fresh(), type: this.frand() < 0.5 ? 'int' : 'varchar' };
      const dflt = this.frand() < 0.4 ? (c.type === 'int' ? ' NOT NULL DEFAULT 7' : ` DEFAULT 'dflt'`) : '';
      await a.query(`ALTER TABLE ${t} ADD COLUMN ${q(c.name)} ${c.type === 'int' ? 'int' : 'varchar(12)'}${dflt}`);
      cols.push(c);
    } else if (kind === 'rename column') {
      const c = this.pick(cols);
      const to = fresh();
      await a.query(`ALTER TABLE ${t} RENAME COLUMN ${q(c.name)} TO ${q(to)}`);
      c.name = to;
    } else if (kind === 'drop column') {
      const c = this.pick(cols);
      await a.query(`ALTER TABLE ${t} DROP COLUMN ${q(c.name)}`);
      cols.splice(cols.indexOf(c), 1);
    } else if (kind === 'int→bigint') {
      const c = this.pick(ints);
      await a.query(`ALTER TABLE ${t} ALTER COLUMN ${q(c.name)} TYPE bigint`);
      c.type = 'bigint';
    } else if (kind === 'varchar→text') {
      const c = this.pick(varchars);
      await a.query(`ALTER TABLE ${t} ALTER COLUMN ${q(c.name)} TYPE text`);
      c.type = 'text';
    } else if (kind === 'drop+create table') {
      await a.query(`DROP TABLE ${t}`);
      await a.query(`CREATE TABLE ${t} (id int PRIMARY KEY, v int NOT NULL DEFAULT 0)`);
      cols.length = 0;
    } else {
      name = this.ddlName === 'ddl_t' ? 'ddl_t_r' : 'ddl_t';
      await a.query(`ALTER TABLE ${t} RENAME TO ${q(name)}`);
    }
    // Rows written later in this transaction need the new shape at once (if it does not commit, the
    // error path reads the shape back from the catalog).
    this.ddlName = name;
    this.ddlCols = cols;
    if (kind === 'drop+create table') this.ddlNextId = 1;
    return { kind, name, cols };
  }

  private committedDdl(d: { kind: string }): void {
    bump(this.ddl, d.kind);
  }

  /** One partition operation (in the caller's transaction); returns its model update. */
  private async partitionStep(a: pg.Client): Promise<(() => void) | undefined> {
    const r = this.frand();
    if (r < 0.6) {
      // DML over the attached months (creating one first when none is left).
      if (!this.months.length) return this.partitionCreate(a, 'create');
      const m = this.pick(this.months);
      const k = this.frand();
      const day = `${month(m).slice(0, 8)}${String(this.fint(1, 28)).padStart(2, '0')}`;
      if (k < 0.6) await a.query('INSERT INTO parts (at, v) SELECT $1::date, g FROM generate_series(1, $2) g', [day, this.fint(1, 20)]);
      else if (k < 0.85) await a.query(`UPDATE parts SET v = v + 1 WHERE at >= $1::date AND at < $1::date + interval '1 month' AND id % 3 = $2`, [month(m), this.fint(0, 3)]);
      else await a.query(`DELETE FROM parts WHERE id IN (SELECT id FROM parts WHERE at >= $1::date AND at < $1::date + interval '1 month' LIMIT 3)`, [month(m)]);
      return () => bump(this.partitionOps, 'rows');
    }
    // Narrowed (partitions=…): the operation drawn is replaced by the first allowed one in this order.
    const allowed = this.features.ops.partitions;
    const ok = (op: string) => !allowed || allowed.has(op);
    let op = r < 0.72 || this.months.length < 2 ? 'create' : r < 0.8 ? 'attach' : r < 0.9 ? 'truncate' : 'detach';
    if (!ok(op)) op = [op, ...PARTITION_OPS].find((o) => ok(o) && (o === 'truncate' || o === 'detach' ? this.months.length >= 2 : true)) ?? 'rows';
    if (op === 'rows') return this.partitionStep(a);
    if (op === 'create') return this.partitionCreate(a, 'create');
    if (op === 'attach') return this.partitionCreate(a, 'attach');
    if (op === 'truncate') {
      const m = this.pick(this.months);
      await a.query(`TRUNCATE ${q(partName(m))}`);
      return () => bump(this.partitionOps, 'truncate');
    }
    const m = this.pick(this.months);
    await a.query(`ALTER TABLE parts DETACH PARTITION ${q(partName(m))}`);
    await a.query(`DROP TABLE ${q(partName(m))}`);
    return () => {
      this.months = this.months.filter((x) => x !== m);
      bump(this.partitionOps, 'detach+drop');
    };
  }

  /** A new month: CREATE … PARTITION OF, or CREATE TABLE … (LIKE parts) then ATTACH; a row put into it at once. */
  private async partitionCreate(a: pg.Client, how: 'create' | 'attach'): Promise<() => void> {
    const m = this.nextMonth++;
    const p = q(partName(m));
    const range = `FOR VALUES FROM ('${month(m)}') TO ('${month(m + 1)}')`;
    if (how === 'create') await a.query(`CREATE TABLE ${p} PARTITION OF parts ${range}`);
    else {
      await a.query(`CREATE TABLE ${p} (LIKE parts INCLUDING DEFAULTS)`);
      await a.query(`ALTER TABLE parts ATTACH PARTITION ${p} ${range}`);
    }
    await a.query('INSERT INTO parts (at, v) VALUES ($1::date, 1)', [month(m)]);
    return () => {
      this.months.push(m);
      bump(this.partitionOps, how);
    };
  }

  /** One key operation (in the caller's transaction); returns its model update. */
  private async keyStep(a: pg.Client): Promise<() => void> {
    const r = this.frand();
    if (r < 0.45) {
      // kd: DEFERRABLE primary key; every key moves in one statement.
      const k = this.frand();
      if (k < 0.4) {
        const by = this.fint(1, 4);
        await a.query('UPDATE kd SET id = id + $1', [by]);
        return () => {
          this.kdLo += by;
          this.kdHi += by;
          this.keyMoves += this.kdHi - this.kdLo + 1;
          bump(this.keyOps, 'kd shift');
        };
      }
      if (k < 0.7) {
        await a.query('UPDATE kd SET id = $1 - id', [this.kdLo + this.kdHi]);
        return () => {
          this.keyMoves += this.kdHi - this.kdLo + 1;
          bump(this.keyOps, 'kd reverse');
        };
      }
      const x = this.fint(this.kdLo, this.kdHi + 1);
      const y = this.fint(this.kdLo, this.kdHi + 1);
      await a.query('UPDATE kd SET id = $1::int + $2::int - id WHERE id IN ($1, $2)', [x, y]);
      if (this.frand() < 0.5) await a.query(`UPDATE kd SET v = v || '.' WHERE id = $1`, [x]);
      return () => {
        this.keyMoves += x === y ? 0 : 2;
        bump(this.keyOps, 'kd swap');
      };
    }
    if (r < 0.65) {
      // ri: REPLICA IDENTITY USING INDEX (a, b).
      const k = this.frand();
      if (k < 0.4) {
        const n = this.riNext;
        await a.query('INSERT INTO ri VALUES ($1, 0, $2), ($1, 1, $2)', [n, `r${n}`]);
        return () => {
          this.riNext = n + 1;
          bump(this.keyOps, 'ri insert');
        };
      }
      const at = this.fint(1, Math.max(2, this.riNext));
      if (k < 0.7) {
        await a.query('UPDATE ri SET b = b + 2 WHERE a = $1', [at]);
        return () => {
          this.keyMoves += 2;
          bump(this.keyOps, 'ri identity move');
        };
      }
      if (k < 0.85) await a.query(`UPDATE ri SET v = v || '+' WHERE a = $1`, [at]);
      else await a.query('DELETE FROM ri WHERE a = $1 AND b = (SELECT min(b) FROM ri WHERE a = $1)', [at]);
      return () => bump(this.keyOps, 'ri update/delete');
    }
    if (r < 0.85) {
      // dup: REPLICA IDENTITY FULL with duplicate rows; one of two equal rows changed.
      const x = this.fint(0, 15);
      const k = this.frand();
      if (k < 0.45) await a.query(`INSERT INTO dup VALUES ($1, 'd'), ($1, 'd')`, [x]);
      else if (k < 0.75) await a.query(`UPDATE dup SET b = b || '1' WHERE ctid = (SELECT ctid FROM dup WHERE a = $1 LIMIT 1)`, [x]);
      else await a.query('DELETE FROM dup WHERE ctid = (SELECT ctid FROM dup WHERE a = $1 LIMIT 1)', [x]);
      return () => bump(this.keyOps, 'full duplicates');
    }
    // nokey: no key, no identity. WAL capture: PostgreSQL refuses UPDATE/DELETE of such a published table,
    // so inserts and TRUNCATE; trigger capture takes the whole row as its identity, so updates and deletes too.
    const x = this.fint(0, 10);
    const k = this.frand();
    if (k < 0.6 || (this.mode === 'wal' && k < 0.95)) await a.query(`INSERT INTO nokey VALUES ($1, 'n'), ($1, 'n')`, [x]);
    else if (k < 0.8) await a.query(`UPDATE nokey SET b = b || '1' WHERE a = $1`, [x]);
    else if (k < 0.95) await a.query('DELETE FROM nokey WHERE a = $1', [x]);
    else await a.query('TRUNCATE nokey');
    return () => bump(this.keyOps, 'keyless');
  }

  async stop(): Promise<number> {
    this.stopped = true;
    await this.done;
    return this.committed;
  }
}
