// A small application using pgferry's subscribe() API, run as its own process by
// test/e2e/subscribers.test.ts (so a test can kill -9 it and start it again).
// It records every change it is handed in the `seen` table of its database:
// through ctx.client (in the position's transaction) when SUB_TRANSACTIONAL=1,
// else through a pool of its own (at least once).
const pg = require('pg');
const { subscribe } = require('../../dist/src/index.js');

const env = process.env;
const list = (s) => (s ? s.split(',') : undefined);
const pool = new pg.Pool({ connectionString: env.POSITIONS_URL, max: 2 });
const slowMs = Number(env.SUB_SLOW_MS ?? 0);

async function record(q, name, ev) {
  await q.query('INSERT INTO seen (subscriber, id, lsn, idx, tbl, op, key, new) VALUES ($1, $2, $3::pg_lsn, $4, $5, $6, $7, $8)', [
    name,
    ev.id,
    ev.lsn,
    ev.index,
    `${ev.schema}.${ev.table}`,
    ev.operation,
    JSON.stringify(ev.key),
    ev.new ? JSON.stringify(ev.new) : null,
  ]);
  if (slowMs) await new Promise((r) => setTimeout(r, slowMs));
}

const transactional = env.SUB_TRANSACTIONAL === '1';
const name = env.SUB_NAME;
const sub = subscribe({
  name,
  source: env.SUB_SOURCE,
  tables: list(env.SUB_TABLES),
  operations: list(env.SUB_OPS),
  from: env.SUB_FROM,
  deliver: env.SUB_DELIVER,
  transactional,
  position: { url: env.POSITIONS_URL, table: { schema: 'app', table: 'subscriber positions' } },
  handler:
    env.SUB_DELIVER === 'change'
      ? (ev, ctx) => record(ctx.client ?? pool, name, ev)
      : async (txn, ctx) => {
          for (const ev of txn.changes) await record(ctx.client ?? pool, name, ev);
        },
});
sub.ready.then(() => process.stdout.write(`subscriber ${name} ready\n`));
sub.done.then(
  () => pool.end(),
  (err) => {
    process.stderr.write(`subscriber ${name} stopped: ${err.message}\n`);
    process.exit(1);
  },
);
process.on('SIGTERM', () => sub.stop().then(() => process.exit(0)));
