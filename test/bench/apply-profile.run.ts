import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { RelationInfo, TxnMessage } from '../../src/change';
import { relKey } from '../../src/change';
import { formatLsn } from '../../src/lsn';
import pg from 'pg';
import { StreamReader } from '../../src/changelog/stream';
import { CraftedLog } from '../helpers/crafted-log';

/**
 * `npm run bench:apply`: apply alone, on a stream filled beforehand with
 * PGFERRY_PROFILE_TXNS (default 50,000) TPC-B-shaped transactions (three
 * keyed updates and a keyless insert, as pgbench's tpcb-like script at
 * scale 10 writes them): the catch-up rate of one apply session with capture,
 * Temporal and the source out of the picture, and where its time goes
 * (wall vs the process's own CPU). Run with --cpu-prof for a profile.
 * Messages hold runs of PGFERRY_PROFILE_RUN transactions (default 64).
 */
const TXNS = Number(process.env.PGFERRY_PROFILE_TXNS ?? 50_000);
/** Transactions per message (PGFERRY_PROFILE_RUN, default 64): capture closes runs of about this many under TPC-B load. */
const RUN = Number(process.env.PGFERRY_PROFILE_RUN ?? 64);
const PGBENCH = '/usr/lib/postgresql/15/bin/pgbench';
let log: CraftedLog;

const col = (name: string, type: string, key = false) => ({ name, type, key });
const rels: Record<string, RelationInfo> = {
  accounts: { schema: 'public', table: 'pgbench_accounts', identity: 'default', columns: [col('aid', 'integer', true), col('bid', 'integer'), col('abalance', 'integer'), col('filler', 'character(84)')] },
  tellers: { schema: 'public', table: 'pgbench_tellers', identity: 'default', columns: [col('tid', 'integer', true), col('bid', 'integer'), col('tbalance', 'integer'), col('filler', 'character(84)')] },
  branches: { schema: 'public', table: 'pgbench_branches', identity: 'default', columns: [col('bid', 'integer', true), col('bbalance', 'integer'), col('filler', 'character(88)')] },
  history: { schema: 'public', table: 'pgbench_history', identity: 'default', columns: [col('tid', 'integer'), col('bid', 'integer'), col('aid', 'integer'), col('delta', 'integer'), col('mtime', 'timestamp without time zone'), col('filler', 'character(22)')] },
};
const key = (r: RelationInfo) => relKey(r.schema, r.table);

/** The balances the workload leaves (pgbench -i starts them at 0), per table and key. */
const balances = { a: new Map<number, number>(), t: new Map<number, number>(), b: new Map<number, number>() };

/** Deterministic TPC-B transactions; `balances` holds what they leave. */
function workload(n: number): TxnMessage[] {
  let seed = 20261202;
  const rnd = (k: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % k) + 1;
  const bal = balances;
  const out: TxnMessage[] = [];
  for (let i = 0; i < n; i++) {
    const aid = rnd(1_000_000), tid = rnd(100), bid = rnd(10), delta = rnd(10_000) - 5000;
    const a = (bal.a.get(aid) ?? 0) + delta, t = (bal.t.get(tid) ?? 0) + delta, b = (bal.b.get(bid) ?? 0) + delta;
    bal.a.set(aid, a); bal.t.set(tid, t); bal.b.set(bid, b);
    const lsn = formatLsn(BigInt(1_000_000 + i * 100));
    out.push({
      v: 1, source: 'profile', xid: i, lsn, endLsn: lsn, commitTime: new Date(Date.UTC(2026, 0, 1) + i).toISOString(), seq: 0, last: true,
      relations: Object.fromEntries(Object.values(rels).map((r) => [key(r), r])),
      changes: [
        { op: 'update', rel: key(rels.accounts), old: { aid: String(aid) }, new: { aid: String(aid), bid: String(Math.ceil(aid / 100_000)), abalance: String(a), filler: ' '.repeat(84) } },
        { op: 'update', rel: key(rels.tellers), old: { tid: String(tid) }, new: { tid: String(tid), bid: String(Math.ceil(tid / 10)), tbalance: String(t), filler: null } },
        { op: 'update', rel: key(rels.branches), old: { bid: String(bid) }, new: { bid: String(bid), bbalance: String(b), filler: null } },
        { op: 'insert', rel: key(rels.history), new: { tid: String(tid), bid: String(bid), aid: String(aid), delta: String(delta), mtime: '2026-01-01 00:00:00', filler: null } },
      ],
    });
  }
  return out;
}

beforeAll(async () => {
  log = await CraftedLog.create();
  await log.reset('');
  execFileSync(PGBENCH, ['-i', '-q', '-s', '10', '-I', 'dtGvp', log.cluster.url(log.db)], { stdio: 'pipe' });
  const t0 = Date.now();
  const txns = workload(TXNS);
  // As capture publishes a backlog: runs of RUN transactions per message (1: a message each).
  for (let i = 0; i < txns.length; i += RUN) await (RUN > 1 ? log.publishRun(...txns.slice(i, i + RUN)) : log.publish(txns[i]));
  console.log(`published ${TXNS} transactions in runs of ${RUN} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}, 600_000);

afterAll(async () => log?.close());

/** Replica statements by kind (their first words), for the "time in" line: where the replica's time goes. */
function queryKind(q: unknown): string {
  const text = typeof q === 'string' ? q : ((q as { text?: string })?.text ?? (q?.constructor?.name === 'CopyStreamQuery' ? 'COPY' : '?'));
  const words = text.trim().split(/\s+/).slice(0, 2).join(' ').replace(/pgferry_\w+/, '').replace(/[("].*$/, '');
  return `replica ${words.toUpperCase().slice(0, 24)}`;
}

/** Wall time spent inside `obj[name]` (awaited), summed: where an apply session waits. */
function timeMethod(obj: any, name: string, into: Record<string, number>, label: string | ((...args: any[]) => string)) {
  const orig = obj[name];
  obj[name] = function (this: unknown, ...args: unknown[]) {
    const t = performance.now();
    const r = orig.apply(this, args);
    const l = typeof label === 'string' ? label : label(...args);
    const done = () => (into[l] = (into[l] ?? 0) + performance.now() - t);
    if (r && typeof r.then === 'function') r.then(done, done);
    else done();
    return r;
  };
  return () => (obj[name] = orig);
}

it(`applies ${TXNS} TPC-B transactions from the stream`, async () => {
  const stages: Record<string, number> = {};
  const undo = [timeMethod(pg.Client.prototype, 'query', stages, queryKind), timeMethod(StreamReader.prototype, 'next', stages, 'stream reads'), timeMethod(JSON, 'parse', stages, 'JSON.parse')];
  const cpu0 = process.cpuUsage();
  const t0 = Date.now();
  let applied = 0;
  const ac = new AbortController();
  const session = log.session({
    maxRunMs: 3_600_000,
    maxChanges: Number(process.env.PGFERRY_BATCH_MAX_CHANGES ?? 20_000),
    maxWaitMs: 1000,
    signal: ac.signal,
    onBatch: (total) => {
      applied = total.txns;
      if (applied >= TXNS) ac.abort();
    },
  });
  const r = await session;
  const wall = (Date.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  console.log(
    `applied ${r.txns} transactions in ${r.batches} batches, ${wall.toFixed(1)} s = ${Math.round(r.txns / wall)} txns/s; ` +
      `process CPU ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s (${Math.round((100 * (cpu.user + cpu.system)) / 1e6 / wall)}% of one core)`,
  );
  undo.forEach((f) => f());
  console.log(`time in: ${Object.entries(stages).map(([k, v]) => `${k} ${(v / 1000).toFixed(2)} s`).join(', ')}`);
  expect(r.txns).toBe(TXNS);
  // The replica holds what the transactions leave: every balance, and one history row per transaction.
  const got = async (sql: string) => new Map((await log.rows(sql) as { k: number; v: number }[]).map((x) => [Number(x.k), Number(x.v)]));
  expect(await got('SELECT aid AS k, abalance AS v FROM pgbench_accounts WHERE abalance <> 0')).toEqual(new Map([...balances.a].filter(([, v]) => v !== 0)));
  expect(await got('SELECT tid AS k, tbalance AS v FROM pgbench_tellers')).toEqual(new Map([...Array(100)].map((_, i) => [i + 1, balances.t.get(i + 1) ?? 0])));
  expect(await got('SELECT bid AS k, bbalance AS v FROM pgbench_branches')).toEqual(new Map([...Array(10)].map((_, i) => [i + 1, balances.b.get(i + 1) ?? 0])));
  expect(await log.rows('SELECT count(*)::int AS n FROM pgbench_history')).toEqual([{ n: TXNS }]);
}, 3_600_000);
