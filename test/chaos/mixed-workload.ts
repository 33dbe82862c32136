import pg from 'pg';
import { mulberry32 } from '../helpers/random-workload';

/**
 * The chaos campaign's workload: a seeded mix of what production sources do,
 * each committed transaction inserting one audit row with a unique id (so a
 * replica's audit table shows every lost or doubled transaction):
 * - small OLTP transactions (a counter update, an event insert);
 * - large transactions of many chunks (hundreds to thousands of rows, with
 *   updates of earlier ones), some committed while a small transaction on
 *   another connection commits in between (defect A's recipe);
 * - TRUNCATE of a table, refilled in the same transaction;
 * - inserts, updates and deletes on a REPLICA IDENTITY FULL table without a key;
 * - transactions rolled back (their audit rows never exist on the source).
 */
/** Beside the fault suite's audit tables (test/helpers/workload.ts: audit, counters, events). */
export const CHAOS_SCHEMA = `
  CREATE TABLE bulk (id bigserial PRIMARY KEY, batch int NOT NULL, body text NOT NULL, touched int NOT NULL DEFAULT 0);
  CREATE TABLE scratch (id int PRIMARY KEY, v text NOT NULL);
  CREATE TABLE full_t (a int NOT NULL, b text);
  ALTER TABLE full_t REPLICA IDENTITY FULL;
`;
export const CHAOS_TABLES = ['audit', 'counters', 'events', 'bulk', 'scratch', 'full_t'];

export class MixedWorkload {
  committed = 0;
  rolledBack = 0;
  large = 0;
  interleaved = 0;
  errors = 0;
  private stopped = false;
  private done: Promise<void> | null = null;
  private readonly rand: () => number;

  constructor(
    private readonly url: string,
    seed: number,
    /** Rows of a large transaction: [min, max). */
    private readonly largeRows: [number, number] = [300, 3000],
  ) {
    this.rand = mulberry32(seed);
  }

  start(): void {
    this.done = this.run();
  }

  private int(lo: number, hi: number): number {
    return lo + Math.floor(this.rand() * (hi - lo));
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
        while (!this.stopped) await this.one(a, b);
      } catch {
        // A transaction whose COMMIT got no answer may or may not have committed: the audit compares
        // with the source's own audit table, so either is fine.
        this.errors += 1;
        await new Promise((r) => setTimeout(r, 200));
      } finally {
        await a.end().catch(() => undefined);
        await b.end().catch(() => undefined);
      }
    }
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
      await a.query('UPDATE bulk SET touched = touched + 1 WHERE batch = $1 AND id % 7 = 0', [n]);
      if (this.rand() < 0.5) {
        await b.query('BEGIN');
        await this.audit(b);
        await b.query('UPDATE counters SET v = v + 1 WHERE id = 1');
        await b.query('COMMIT');
        this.committed += 1;
        this.interleaved += 1;
      }
      await a.query('COMMIT');
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

  async stop(): Promise<number> {
    this.stopped = true;
    await this.done;
    return this.committed;
  }
}
