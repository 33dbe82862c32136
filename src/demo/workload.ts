/**
 * The demo's gentle write workload: one small transaction at a time on the
 * source's shop tables — a new customer with a first order, a new order, an
 * order moving on (new → paid → shipped), or a shipped order removed — so
 * replicas see inserts, updates and deletes of several types.
 */
import pg from 'pg';

export interface Workload {
  stop(): Promise<{ txns: number }>;
}

export async function startWorkload(url: string, perSecond: number): Promise<Workload> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  let txns = 0;
  let running = true;
  let failure: Error | null = null;
  const step = async () => {
    const roll = Math.random() * 100;
    await c.query('BEGIN');
    if (roll < 20 || txns === 0) {
      const { rows } = await c.query(
        `INSERT INTO customers (name, email, tags) VALUES ($1, $2, $3) RETURNING id`,
        [`customer ${txns}`, `c${txns}-${Date.now()}@example.com`, ['demo', txns % 3 ? 'regular' : 'vip']],
      );
      await c.query(`INSERT INTO orders (customer_id, amount, details) VALUES ($1, $2, $3)`, [rows[0].id, (Math.random() * 200).toFixed(2), { items: 1, note: 'first order' }]);
    } else if (roll < 45) {
      await c.query(
        `INSERT INTO orders (customer_id, amount, details) SELECT id, $1, $2 FROM customers ORDER BY random() LIMIT 1`,
        [(Math.random() * 500).toFixed(2), { items: 1 + Math.floor(Math.random() * 5) }],
      );
    } else if (roll < 95) {
      await c.query(
        `UPDATE orders SET status = CASE status WHEN 'new' THEN 'paid' ELSE 'shipped' END, updated_at = now()
         WHERE id = (SELECT id FROM orders WHERE status <> 'shipped' ORDER BY random() LIMIT 1)`,
      );
    } else {
      await c.query(`DELETE FROM orders WHERE id = (SELECT id FROM orders WHERE status = 'shipped' ORDER BY random() LIMIT 1)`);
    }
    await c.query('COMMIT');
    txns += 1;
  };
  const loop = (async () => {
    while (running) {
      const t0 = Date.now();
      try {
        await step();
      } catch (err) {
        failure = err as Error;
        running = false;
        break;
      }
      await new Promise((r) => setTimeout(r, Math.max(0, 1000 / perSecond - (Date.now() - t0))));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      await c.end().catch(() => undefined);
      if (failure) throw new Error(`demo workload stopped: ${failure.message}`);
      return { txns };
    },
  };
}
