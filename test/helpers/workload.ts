import pg from 'pg';

/**
 * A steady write workload with an audit trail: every source transaction
 * inserts one audit row with a unique id, updates a counter and inserts an
 * event. The audit table has no key, so a transaction applied twice on a
 * replica shows up as a duplicate row instead of an error, and a lost one as
 * a missing row.
 */
export const AUDIT_SCHEMA = `
  CREATE TABLE audit (txn_id uuid NOT NULL, n int NOT NULL);
  CREATE TABLE counters (id int PRIMARY KEY, v bigint NOT NULL);
  CREATE TABLE events (id bigserial PRIMARY KEY, counter_id int NOT NULL, payload jsonb, at timestamptz NOT NULL DEFAULT clock_timestamp());
  INSERT INTO counters SELECT g, 0 FROM generate_series(1, 10) g;
`;
export const AUDIT_TABLES = ['audit', 'counters', 'events'];

export class Workload {
  committed = 0;
  private stopped = false;
  private done: Promise<void> | null = null;

  /**
   * `sleepMs` between transactions: a busy source the replica can keep up with (0: as fast as it goes).
   * `reconnect`: survive the source going away (restarts, terminated backends): reconnect and go
   * on. A transaction whose COMMIT got no answer may or may not have committed; audits compare
   * against the source's own audit table, so either is fine. `errors` counts those interruptions.
   */
  errors = 0;

  constructor(
    private readonly url: string,
    private readonly sleepMs = 0,
    private readonly opts: { reconnect?: boolean } = {},
  ) {}

  start(): void {
    this.done = this.run();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.runOnce();
      } catch (err) {
        if (!this.opts.reconnect) throw err;
        this.errors += 1;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  private async runOnce(): Promise<void> {
    const c = new pg.Client({ connectionString: this.url });
    c.on('error', () => undefined); // a dropped connection surfaces in the next query
    await c.connect();
    try {
      while (!this.stopped) {
        const n = this.committed + 1;
        await c.query('BEGIN');
        await c.query('INSERT INTO audit VALUES (gen_random_uuid(), $1)', [n]);
        await c.query('UPDATE counters SET v = v + 1 WHERE id = $1', [(n % 10) + 1]);
        await c.query('INSERT INTO events (counter_id, payload) VALUES ($1, $2)', [(n % 10) + 1, JSON.stringify({ n })]);
        await c.query('COMMIT');
        this.committed = n;
        if (this.sleepMs) await new Promise((r) => setTimeout(r, this.sleepMs));
        else if (n % 50 === 0) await new Promise((r) => setTimeout(r, 5)); // a steady, not saturating, stream
      }
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  async stop(): Promise<number> {
    this.stopped = true;
    await this.done;
    return this.committed;
  }
}

/** Audit of one database: rows, distinct transaction ids. */
export async function audit(c: pg.Client): Promise<{ rows: number; distinct: number }> {
  const r = (await c.query('SELECT count(*)::int AS rows, count(DISTINCT txn_id)::int AS distinct FROM audit')).rows[0];
  return { rows: r.rows, distinct: r.distinct };
}
