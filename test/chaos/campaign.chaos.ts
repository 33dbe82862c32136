import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as amqp from 'amqplib';
import { mulberry32 } from '../helpers/random-workload';
import { decodeTxn } from '../../src/changelog/envelope';
import { StreamReader } from '../../src/changelog/stream';
import { cli, StopWaiting, upArgs } from '../helpers/fixture';
import { ROOT, startNode, Proc } from '../helpers/procs';
import { waitFor } from '../helpers/wait';
import { fingerprint } from '../helpers/fixture';
import { auditIds } from '../faults/harness/audit';
import { restartTemporal } from '../faults/harness/faults';
import { FaultWorld, PrivateRabbit, REPLICAS, Supervisor } from '../faults/harness/system';
import { declareStream } from '../../src/changelog/stream';
import { streamName } from '../../src/names';
import { chaosFeatures, CHAOS_SCHEMA, FEATURES, MixedWorkload } from './mixed-workload';

/**
 * The randomized fault campaign (`npm run test:chaos`; a short form runs in
 * `npm test`). Per seed: a source with the mixed workload (small OLTP,
 * multi-chunk transactions with small ones committing beside them,
 * TRUNCATEs, a REPLICA IDENTITY FULL table, rollbacks) replicated to two
 * replicas and read by a transactional subscriber, with capture's periodic
 * rotation made short and chunks made small, while faults are injected at
 * random times, several at once: walsender terminated, capture and apply
 * killed -9, RabbitMQ connections closed and RabbitMQ restarted, the Temporal
 * dev server restarted, the replica cluster restarted. A supervisor (as
 * systemd would) restarts what was killed. Then the faults stop, the
 * workload stops, and the oracle: every committed source transaction exactly
 * once on every replica (audit ids), every table's content equal, and the
 * subscriber saw every audit row exactly once, in commit order.
 *
 * Seeds: PGFERRY_CHAOS_SEED=<n> replays one; otherwise PGFERRY_CHAOS_SEEDS
 * runs (default 1) start at PGFERRY_CHAOS_BASE (default random, printed).
 * PGFERRY_CHAOS_SECONDS is each run's fault window (default 40);
 * PGFERRY_CHAOS_MODE=trigger captures with triggers instead of logical
 * decoding (the walsender fault then terminates capture's source sessions).
 *
 * Widened search (issue 26), PGFERRY_CHAOS_FEATURES=ddl,partitions,keys,guc,stream,join
 * (default all; "none" for the base mix alone; a seed replays with the same
 * feature set): schema changes, partition maintenance and odd key shapes in
 * the workload (mixed-workload.ts); the stream deleted and re-declared on the
 * private RabbitMQ (`stream`); `joiner` joining replicas again with
 * `pgferry table add --replace` during the load (`join`). Replicas take schema
 * changes (`schema_changes: apply`, the default for replicas given by flag),
 * and the source is superuser-owned, so init installs the event triggers.
 * The oracle for the stream's deletion: each replica equals the source or
 * stops in needs_resync; the campaign then runs `pgferry replica resync` and
 * waits for equality. A replica `running` and different is a failure.
 */
const SEEDS = Number(process.env.PGFERRY_CHAOS_SEEDS ?? 1);
const BASE = Number(process.env.PGFERRY_CHAOS_SEED ?? process.env.PGFERRY_CHAOS_BASE ?? Math.floor(Math.random() * 1e6));
const WINDOW_S = Number(process.env.PGFERRY_CHAOS_SECONDS ?? 40);
/** PGFERRY_CHAOS_MODE=trigger runs the campaign on trigger capture (default wal). */
const MODE = process.env.PGFERRY_CHAOS_MODE === 'trigger' ? 'trigger' : 'wal';
const seeds = process.env.PGFERRY_CHAOS_SEED ? [BASE] : Array.from({ length: SEEDS }, (_, i) => BASE + i);
const FEATURE_SET = chaosFeatures();
const FEATURE_LABEL =
  FEATURE_SET.size === FEATURES.length && !Object.keys(FEATURE_SET.ops).length
    ? 'all'
    : FEATURE_SET.size
      ? [...FEATURE_SET].map((x) => (FEATURE_SET.ops[x] ? `${x}=${[...FEATURE_SET.ops[x]!].join('+')}` : x)).join(',')
      : 'none';
/** The stream's retention as capture declares it by default (a re-declaration with other arguments is refused). */
const DEFAULT_RETENTION = { maxBytes: 20 * 1024 ** 3, maxAge: '7D', segmentBytes: 500_000_000 };

const RESULTS = path.join(__dirname, 'results');

interface RunRow {
  seed: number;
  windowSeconds: number;
  faults: Record<string, number>;
  committed: number;
  large: number;
  interleaved: number;
  rolledBack: number;
  lost: number | null;
  duplicated: number | null;
  subscriberLost: number | null;
  subscriberDuplicated: number | null;
  convergedSeconds: number | null;
  /** Times apply undid part of a transaction sent again, or left one whose chunks stopped (the paths of defect A). */
  resent?: number;
  abandoned?: number;
  /** The widened workload (issue 26): which features, and what it did. */
  mode?: string;
  features?: string;
  ddl?: Record<string, number>;
  partitionOps?: Record<string, number>;
  keyOps?: Record<string, number>;
  keyMoves?: number;
  gucSets?: number;
  streamDeletions?: number;
  joins?: number;
  resyncs?: number;
  subscriberStops?: number;
  outcome: string;
}
const rows: RunRow[] = [];

const SEEN = `CREATE TABLE seen (seq bigserial PRIMARY KEY, subscriber text NOT NULL, id text NOT NULL, lsn pg_lsn NOT NULL, idx int NOT NULL,
                                 tbl text NOT NULL, op text NOT NULL, key text, new text);
              CREATE SCHEMA app;`;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe(`chaos campaign (${MODE} capture, features ${FEATURE_LABEL}): ${seeds.length} run(s) of ${WINDOW_S} s, seeds ${seeds.join(', ')}`, () => {
  let rabbit: PrivateRabbit;

  beforeAll(async () => {
    rabbit = await PrivateRabbit.start();
  });

  afterAll(async () => {
    await rabbit?.destroy();
    writeReport();
  });

  for (const seed of seeds) {
    it(`seed ${seed}: every transaction exactly once on both replicas and the subscriber`, async () => {
      console.log(
        `chaos: seed ${seed} (replay with PGFERRY_CHAOS_SEED=${seed} PGFERRY_CHAOS_MODE=${MODE} PGFERRY_CHAOS_FEATURES=${FEATURE_LABEL} npm run test:chaos)`,
      );
      const rand = mulberry32(seed);
      const f = await FaultWorld.create({
        schema: CHAOS_SCHEMA,
        env: {
          PGFERRY_RABBITMQ_URL: rabbit.url,
          PGFERRY_CHUNK_CHANGES: '50', // large transactions are many chunks
          PGFERRY_CAPTURE_RUN_SECONDS: '12', // capture rotates (reconnects to its slot) every 12 s
          PGFERRY_BATCH_MAX_CHANGES: '2000',
          PGFERRY_CAPTURE_MODE: MODE,
        },
      });
      const row: RunRow = {
        seed,
        windowSeconds: WINDOW_S,
        faults: { 'capture rotation every 12 s': 1 },
        committed: 0,
        large: 0,
        interleaved: 0,
        rolledBack: 0,
        lost: null,
        duplicated: null,
        subscriberLost: null,
        subscriberDuplicated: null,
        convergedSeconds: null,
        mode: MODE,
        features: FEATURE_LABEL,
        streamDeletions: 0,
        joins: 0,
        resyncs: 0,
        subscriberStops: 0,
        outcome: '',
      };
      rows.push(row);
      let sup: Supervisor | null = null;
      let subscriber: Proc | null = null;
      let subscriberRestarts = 0;
      let watchSubscriber: NodeJS.Timeout | null = null;
      /** Every pgferry process of the run, for what their logs say about re-sent transactions. */
      const procs = new Set<Proc>();
      const load = new MixedWorkload(f.w.sourceUrl, seed, undefined, { features: FEATURE_SET, mode: MODE });
      /** Connection flags for the CLI commands the campaign runs (table add, replica resync). */
      const conn = upArgs(f.w).slice(1);
      /** The stream fault's own draws: `rand` draws as before until a deletion at rest. */
      const srand = mulberry32(seed ^ 0x57e40026);
      /** Rebuild the replicas an earlier deletion stopped (as converge does at the end). */
      const resyncStopped = async () => {
        const r = await cli(f.w, ['status', '--json']).catch(() => null);
        const s = r?.stdout ? (JSON.parse(r.stdout) as { replicas?: { replica: string; state: string }[] }) : null;
        for (const x of s?.replicas ?? []) {
          if (x.state !== 'needs_resync') continue;
          const res = await cli(f.w, ['replica', 'resync', x.replica, ...conn]);
          if (res.code === 0) row.resyncs! += 1;
          else console.log(`chaos: replica resync ${x.replica} exited ${res.code}: ${(res.stderr || res.stdout).trim().split('\n').slice(-1)[0]}`);
        }
      };
      /** Replicas whose joiner join has not completed (a refused or interrupted table add is run again at the end). */
      const joinPending = new Set<string>();
      const join = async (r: string) => {
        const res = await cli(f.w, ['table', 'add', 'joiner', '--only', r, '--replace', ...conn]);
        if (res.code !== 0) throw new Error(`table add joiner --only ${r} exited ${res.code}: ${(res.stderr || res.stdout).trim().split('\n').slice(-1)[0]}`);
        joinPending.delete(r);
        row.joins! += 1;
      };
      try {
        const positionsUrl = await f.w.replicas.createDatabase('positions');
        await f.w.replicas.withClient('positions', (c) => c.query(SEEN));
        await f.start();
        sup = new Supervisor(f).start();
        const startSubscriber = () => {
          subscriber = startNode(path.join(ROOT, 'test/helpers/subscriber-app.js'), [], {
            ...f.w.env,
            SUB_SOURCE: f.w.sourceName,
            SUB_NAME: 'audit',
            SUB_TABLES: 'public.audit',
            SUB_FROM: 'beginning',
            SUB_DELIVER: 'transaction',
            SUB_TRANSACTIONAL: '1',
            POSITIONS_URL: positionsUrl,
          });
        };
        startSubscriber();
        const stoppedAt = new Map<Proc, number>();
        /** Loud subscriber stops after the stream was first deleted (only those excuse rows it did not see). */
        let gapStops = 0;
        watchSubscriber = setInterval(() => {
          for (const p of [f.apply, f.capture]) if (p) procs.add(p);
          const s = subscriber!;
          if (s.child.exitCode === null && s.child.signalCode === null) return;
          if (s.child.signalCode !== 'SIGKILL') {
            // A loud stop (a gap, after the stream was deleted): noted, and restarted no faster than every 5 s.
            if (!stoppedAt.has(s)) {
              stoppedAt.set(s, Date.now());
              row.subscriberStops! += 1;
              if (row.streamDeletions) gapStops += 1;
              console.log(`chaos: the subscriber exited (${s.child.exitCode}): ${s.output().slice(-600)}`);
            }
            if (Date.now() - stoppedAt.get(s)! < 5000) return;
          }
          subscriberRestarts += 1;
          startSubscriber();
        }, 500);

        load.start();
        await waitFor('the workload to commit 200 transactions', () => load.committed >= 200, 60_000, 100);

        // The faults: at random moments, several at once (one of each kind at a time).
        const windowStart = Date.now();
        const inFlight = new Map<string, Promise<void>>();
        const faults: Record<string, () => Promise<void>> = {
          [MODE === 'wal' ? 'walsender terminated' : 'capture sessions terminated']: async () => {
            // Trigger capture's sessions are those whose last statement names pgferry's objects (LISTEN pgferry, reads of pgferry.events).
            const q =
              MODE === 'wal'
                ? 'SELECT pg_terminate_backend(pid) FROM pg_stat_replication'
                : `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'app' AND pid <> pg_backend_pid() AND query ILIKE '%pgferry%'`;
            await f.w.source.withClient('postgres', (c) => c.query(q));
          },
          'capture kill -9': async () => void (await f.capture?.kill9()),
          'apply kill -9': async () => void (await f.apply?.kill9()),
          'subscriber kill -9': async () => void (await subscriber?.kill9()),
          'RabbitMQ connections closed': async () => void (await rabbit.ctl('close_all_connections', 'chaos campaign')),
          'RabbitMQ restarted': async () => {
            await rabbit.stopApp();
            await sleep(1000 + rand() * 4000);
            await rabbit.startApp();
          },
          'Temporal restarted': async () => void (await restartTemporal(f.w, () => sleep(500 + rand() * 2500))),
          'replica cluster restarted': async () => {
            f.w.replicas.stop(rand() < 0.5 ? 'fast' : 'immediate');
            await sleep(500 + rand() * 2500);
            f.w.replicas.start();
          },
        };
        if (FEATURE_SET.has('stream')) {
          /** After a deletion at rest the source stays quiet to the end and the stream is not deleted again. */
          let atRest = false;
          /**
           * The stream deleted at rest (the case a busy workload hides: the new stream soon passes the
           * replicas' stored offsets): the source quiet, every replica caught up and idle, the stream
           * deleted and declared again by capture, then a few transactions — fewer messages than any
           * replica's stored offset — and the source quiet to the end. A replica that skips "offsets
           * below mine" stays running without them, and the oracle sees it; pgferry must stop each
           * replica in needs_resync, which converge then resyncs and compares as for any deletion.
           */
          const deleteAtRest = async () => {
            atRest = true;
            load.quiet(24 * 3600_000); // until load.stop()
            if (row.streamDeletions) await resyncStopped();
            const offsets = await settledOffsets(f, 60_000);
            const stored = Object.values(offsets ?? {}).filter((o): o is number => o !== null);
            const k = Math.max(1, Math.min(20, Math.floor(Math.min(80, ...stored) / 4)));
            await rabbit.ctl('delete_queue', streamName(f.w.sourceName));
            row.streamDeletions! += 1;
            row.faults['stream deleted at rest'] = (row.faults['stream deleted at rest'] ?? 0) + 1;
            console.log(
              `chaos:   the stream deleted at rest (stored offsets ${offsets ? JSON.stringify(offsets) : 'unknown: the replicas did not settle in 60 s'}); ` +
                `${k} transactions written, declared again by capture`,
            );
            for (let i = 1; i <= k; i++) await f.w.source.withClient('app', (c) => c.query('UPDATE counters SET v = v + 1 WHERE id = $1', [1 + (i % 10)]));
          };
          // The stream deleted (as an operator or a retention accident would), then declared again: by
          // the campaign after a moment, as capture would when it restarts (same arguments, whichever is first).
          // Half the time on a quiet source; half the time left to capture to declare again. In the window's
          // second half, a share of deletions (PGFERRY_CHAOS_STREAM_AT_REST, default 0.5) happen at rest instead.
          const atRestShare = Number(process.env.PGFERRY_CHAOS_STREAM_AT_REST ?? 0.5);
          faults['stream deleted'] = async () => {
            const quiet = rand() < 0.5;
            const byCapture = rand() < 0.5;
            if (atRest) return;
            if (Date.now() - windowStart >= (WINDOW_S * 1000) / 2 && srand() < atRestShare) return deleteAtRest();
            if (quiet) load.quiet(8000 + rand() * 8000);
            await rabbit.ctl('delete_queue', streamName(f.w.sourceName));
            row.streamDeletions! += 1;
            console.log(`chaos:   the stream deleted${quiet ? ', the source quiet' : ''}; declared again by ${byCapture ? 'capture' : 'the campaign'}`);
            if (byCapture) return;
            await sleep(500 + rand() * 3000);
            const c = await amqp.connect(rabbit.url);
            try {
              await declareStream(c, f.w.sourceName, DEFAULT_RETENTION);
            } finally {
              await c.close().catch(() => undefined);
            }
          };
        }
        if (FEATURE_SET.has('join')) {
          // joiner joins a replica again during the load: half the time it is removed first (and misses
          // changes for a moment), then `table add --replace` copies it from a snapshot and replays the rest.
          faults['table joined'] = async () => {
            const r = REPLICAS[Math.floor(rand() * REPLICAS.length)];
            joinPending.add(r);
            if (rand() < 0.5) {
              const res = await cli(f.w, ['table', 'remove', 'joiner', '--only', r, ...conn]);
              if (res.code !== 0) console.log(`chaos: table remove joiner --only ${r} exited ${res.code}: ${(res.stderr || res.stdout).trim()}`);
              await sleep(500 + rand() * 3000);
            }
            await join(r);
          };
        }
        const kinds = Object.keys(faults);
        const until = Date.now() + WINDOW_S * 1000;
        while (Date.now() < until) {
          await sleep(1000 + rand() * 4000);
          const kind = kinds[Math.floor(rand() * kinds.length)];
          if (inFlight.has(kind)) continue;
          row.faults[kind] = (row.faults[kind] ?? 0) + 1;
          console.log(`chaos: +${Math.round((WINDOW_S * 1000 - (until - Date.now())) / 1000)} s ${kind}`);
          inFlight.set(
            kind,
            faults[kind]()
              .catch((err) => console.log(`chaos: ${kind} failed: ${(err as Error).message.split('\n')[0]}`))
              .finally(() => inFlight.delete(kind)),
          );
        }
        await Promise.all(inFlight.values());
        if (!(await rabbit.answers())) await rabbit.startApp();

        // Settle: the workload goes on a little with everything up, then stops; wait for convergence.
        await sleep(3000);
        row.committed = await load.stop();
        Object.assign(row, {
          large: load.large,
          interleaved: load.interleaved,
          rolledBack: load.rolledBack,
          ddl: load.ddl,
          partitionOps: load.partitionOps,
          keyOps: load.keyOps,
          keyMoves: load.keyMoves,
          gucSets: load.gucSets,
        });
        // A join refused or cut short by a fault is run again now (the replica does not take joiner until it completes).
        for (const r of [...joinPending]) {
          await join(r).catch(async (err) => {
            console.log(`chaos: ${(err as Error).message}; again in 5 s`);
            await sleep(5000);
            await join(r);
          });
        }
        const t0 = Date.now();
        let stuck: Error | null = null;
        await converge(f, 300_000, load.tables(), {
          streamDeleted: () => row.streamDeletions! > 0,
          resync: async (r) => {
            const res = await cli(f.w, ['replica', 'resync', r, ...conn]);
            if (res.code !== 0) throw new StopWaiting(`replica resync ${r} exited ${res.code}: ${(res.stderr || res.stdout).trim().split('\n').slice(-1)[0]}`);
            row.resyncs! += 1;
          },
        }).catch((err) => (stuck = err as Error));
        if (!stuck) row.convergedSeconds = (Date.now() - t0) / 1000;
        const src = await auditIds(f.w, null);
        let lost = 0;
        let duplicated = 0;
        for (const r of REPLICAS) {
          const dst = await auditIds(f.w, r);
          const seen = new Set(dst);
          lost += src.filter((id) => !seen.has(id)).length;
          duplicated += dst.length - seen.size;
        }
        Object.assign(row, { lost, duplicated });
        if (lost || duplicated) await diagnose(f, rabbit.url, src);
        const sub = await subscriberAudit(f, new Set(src));
        Object.assign(row, { subscriberLost: sub.lost, subscriberDuplicated: sub.duplicated });
        // After the stream was deleted, what was in it is in no log: a subscriber that stopped loudly (its
        // gap) may miss it; one that missed rows without stopping skipped them silently.
        const subscriberLostLoudly = row.streamDeletions! > 0 && gapStops > 0;
        if (subscriberLostLoudly && sub.lost) console.log(`chaos: the subscriber stopped at the stream's deletion; ${sub.lost} audit rows not seen (in no log)`);
        const subscriberLost = subscriberLostLoudly ? 0 : sub.lost;
        if (stuck) row.outcome = `DID NOT CONVERGE: ${(stuck as Error).message.split('\n')[0]}`;
        const said = (re: RegExp) => [...procs].reduce((n, p) => n + (p.output().match(re)?.length ?? 0), 0);
        row.resent = said(/transaction sent again in the stream/g);
        row.abandoned = said(/transaction incomplete in the stream/g);
        row.outcome ||=
          lost || duplicated || subscriberLost || sub.duplicated || sub.outOfOrder
            ? `AUDIT FAILED${sub.outOfOrder ? ` (subscriber out of order ${sub.outOfOrder}×)` : ''}`
            : `replicas equal the source${row.resyncs ? ` (after ${row.resyncs} resyncs)` : ''}; subscriber ${
                subscriberLostLoudly && sub.lost ? `stopped at the stream's gap (${sub.lost} audit rows in no log), saw the rest once, in order` : 'saw each once, in order'
              }${subscriberRestarts ? ` (${subscriberRestarts} restarts)` : ''}`;
        if (stuck) throw stuck;
        expect({ lost, duplicated, subscriberLost, subscriberDuplicated: sub.duplicated, outOfOrder: sub.outOfOrder }).toEqual({
          lost: 0,
          duplicated: 0,
          subscriberLost: 0,
          subscriberDuplicated: 0,
          outOfOrder: 0,
        });
      } catch (err) {
        row.outcome ||= `FAILED: ${(err as Error).message.split('\n').slice(0, 3).join(' ')}`;
        throw err;
      } finally {
        if (watchSubscriber) clearInterval(watchSubscriber);
        await load.stop().catch(() => undefined);
        await sup?.stop();
        await (subscriber as Proc | null)?.stop();
        if (!(await rabbit.answers())) await rabbit.startApp().catch(() => undefined);
        await f.teardown();
        console.log(`chaos: ${JSON.stringify(row)}`);
      }
    }, WINDOW_S * 1000 + 900_000);
  }
});

/**
 * Wait until both replicas hold the source's content, failing early on a
 * stopped replica or when nothing moves for a minute: first the audit row
 * counts (cheap), then every table's row count and row hash. After the
 * stream was deleted, a replica in needs_resync is what pgferry must do: it
 * is resynced (`opts.resync`) and waited for like the others; one that stays
 * running and differs is the failure.
 */
/**
 * The replicas' stored stream offsets once they are caught up and idle: every replica holds every audit
 * row of the (quiet) source and no checkpoint moved between two polls a second apart. Null if that did
 * not happen within `timeoutMs` (a replica stopped, or still recovering from a fault).
 */
async function settledOffsets(f: FaultWorld, timeoutMs: number): Promise<Record<string, number | null> | null> {
  const count = (cluster: FaultWorld['w']['source'], db: string) =>
    cluster.withClient(db, async (c) => (await c.query('SELECT count(*)::int AS n FROM audit')).rows[0].n as number);
  let last = '';
  return waitFor(
    'the replicas to be caught up and idle',
    async () => {
      const want = await count(f.w.source, 'app');
      const now: Record<string, number | null> = {};
      for (const r of REPLICAS) {
        if ((await count(f.w.replicas, `replica_${r}`)) !== want) {
          last = '';
          return null;
        }
        const o = await f.w.replicas.withClient(`replica_${r}`, async (c) =>
          (await c.query('SELECT stream_offset::text AS o FROM pgferry.progress WHERE replica = $1', [r])).rows[0]?.o as string | null | undefined,
        );
        now[r] = o == null ? null : Number(o);
      }
      const key = JSON.stringify(now);
      const settled = key === last;
      last = key;
      return settled ? now : null;
    },
    timeoutMs,
    1000,
  ).catch(() => null);
}

async function converge(
  f: FaultWorld,
  timeoutMs: number,
  tables: string[],
  opts: { streamDeleted: () => boolean; resync: (replica: string) => Promise<void> },
): Promise<void> {
  let lastStatus = 0;
  let detail = '';
  let changedAt = Date.now();
  let states: Record<string, string> = {};
  let why = '';
  const count = (cluster: FaultWorld['w']['source'], db: string) => cluster.withClient(db, async (c) => (await c.query('SELECT count(*)::int AS n FROM audit')).rows[0].n as number);
  await waitFor(
    'both replicas to equal the source',
    async () => {
      if (Date.now() - lastStatus > 5000) {
        lastStatus = Date.now();
        const r = await cli(f.w, ['status', '--json']).catch(() => null);
        const s = r?.stdout
          ? (JSON.parse(r.stdout) as {
              replicas?: { replica: string; state: string; lastError?: string | null; retrying?: string | null; captureError?: string | null; offset?: number | null }[];
            })
          : null;
        states = Object.fromEntries((s?.replicas ?? []).map((x) => [x.replica, x.state]));
        // Why a running replica does not move, for the report: its retried error and capture's.
        why = (s?.replicas ?? [])
          .filter((x) => x.state === 'running' && (x.retrying || x.captureError))
          .map((x) => `${x.replica} at offset ${x.offset ?? '-'}: ${x.retrying ? `retrying: ${x.retrying}` : ''}${x.captureError ? ` capture: ${x.captureError}` : ''}`)
          .join('; ');
        for (const x of s?.replicas ?? []) {
          if (x.state === 'needs_resync' && opts.streamDeleted()) {
            console.log(`chaos: replica '${x.replica}' is needs_resync after the stream's deletion (${x.lastError}): pgferry replica resync ${x.replica}`);
            await opts.resync(x.replica);
            changedAt = Date.now();
          } else if (x.state === 'failed' || x.state === 'needs_resync') throw new StopWaiting(`replica '${x.replica}' is ${x.state}: ${x.lastError}`);
        }
      }
      const want = await count(f.w.source, 'app');
      const parts: string[] = [];
      for (const r of REPLICAS) {
        const n = await count(f.w.replicas, `replica_${r}`);
        if (n !== want) parts.push(`${r}: ${n}/${want} audit rows`);
      }
      if (!parts.length) {
        for (const t of tables) {
          const src = await fingerprint(f.w.source, 'app', t);
          for (const r of REPLICAS) {
            const dst = await fingerprint(f.w.replicas, `replica_${r}`, t).catch((err) => ({ rows: `(${(err as Error).message})`, hash: '' }));
            if (src.rows !== dst.rows || src.hash !== dst.hash) parts.push(`${r}.${t}: ${dst.rows}/${src.rows} rows${src.rows === dst.rows ? ' (content differs)' : ''}`);
          }
        }
      }
      const now = parts.join(', ');
      if (now !== detail) {
        detail = now;
        changedAt = Date.now();
      } else if (parts.length && Date.now() - changedAt > 60_000) {
        const running = REPLICAS.filter((r) => parts.some((p) => p.startsWith(`${r}`)) && states[r] === 'running');
        throw new StopWaiting(
          running.length
            ? `replica ${running.map((r) => `'${r}'`).join(', ')} running and different from the source for 60 s${opts.streamDeleted() ? ' (after the stream was deleted)' : ''}${why ? ` [${why}]` : ' [no error retried]'}`
            : 'no replica moved for 60 s',
        );
      }
      return parts.length === 0;
    },
    timeoutMs,
    2000,
  ).catch((err) => {
    throw new Error(`${(err as Error).message}; differing: ${detail}`);
  });
}

/**
 * For a failed audit: where each missing audit row of replica a is in the
 * stream (which message, which transaction, its chunks and their offsets),
 * so a loss can be told apart as capture's (not in the log) or apply's.
 */
async function diagnose(f: FaultWorld, rabbitUrl: string, src: string[]): Promise<void> {
  const have = new Set(await auditIds(f.w, 'a'));
  const missing = new Set(src.filter((id) => !have.has(id)));
  const conn = await amqp.connect(rabbitUrl);
  const entries: { offset: number; lsn: string; seq: number; last: boolean; changes: number; ids: string[] }[] = [];
  try {
    const reader = await StreamReader.open(conn, f.w.sourceName, 'first', 256);
    try {
      for (let m = await reader.next(5000); m; m = await reader.next(3000)) {
        const t = decodeTxn(m.body);
        const ids = t.changes.flatMap((ch) => (ch.op === 'insert' && 'txn_id' in ch.new ? [String(ch.new.txn_id)] : []));
        entries.push({ offset: m.offset, lsn: t.lsn, seq: t.seq, last: t.last, changes: t.changes.length, ids });
      }
    } finally {
      await reader.close();
    }
  } finally {
    await conn.close().catch(() => undefined);
  }
  const progress = await f.w.replicas.withClient('replica_a', async (c) => (await c.query('SELECT lsn::text, stream_offset::text FROM pgferry.progress')).rows);
  console.log(`chaos: diagnosis: ${missing.size} audit rows missing on replica a (progress ${JSON.stringify(progress)}); the stream holds ${entries.length} messages`);
  for (const id of missing) {
    const hit = entries.filter((e) => e.ids.includes(id));
    if (!hit.length) {
      console.log(`chaos:   ${id}: in no message of the stream (lost by capture)`);
      continue;
    }
    const lsn = hit[0].lsn;
    const i = entries.findIndex((e) => e === hit[0]);
    const around = entries.slice(Math.max(0, i - 12), i + 12).map((e) => `${e.offset}:${e.lsn}#${e.seq}${e.last ? 'L' : ''}(${e.changes})${e.ids.includes(id) ? '*' : ''}`);
    console.log(`chaos:   ${id}: in transaction ${lsn} at offsets ${hit.map((e) => e.offset).join(', ')}; around it: ${around.join(' ')}`);
  }
}

/** What the subscriber recorded against the source's audit ids: missing, doubled, and commit order broken. */
async function subscriberAudit(f: FaultWorld, src: Set<string>): Promise<{ lost: number; duplicated: number; outOfOrder: number }> {
  const read = () =>
    f.w.replicas.withClient('positions', async (c) =>
      (await c.query(`SELECT lsn::text AS lsn, new FROM seen WHERE subscriber = 'audit' AND op = 'insert' ORDER BY seq`)).rows as { lsn: string; new: string }[],
    );
  // The subscriber catches up on its own: wait for it (it never reports more than it saw).
  await waitFor('the subscriber to have seen every audit row', async () => new Set((await read()).map((r) => JSON.parse(r.new).txn_id)).size >= src.size, 120_000, 1000).catch(() => undefined);
  const rows = await read();
  const ids = rows.map((r) => JSON.parse(r.new).txn_id as string);
  const seen = new Set(ids);
  let outOfOrder = 0;
  const big = (l: string) => l.split('/').reduce((a, x) => a * 2n ** 32n + BigInt(`0x${x}`), 0n);
  for (let i = 1; i < rows.length; i += 1) if (big(rows[i].lsn) < big(rows[i - 1].lsn)) outOfOrder += 1;
  return { lost: [...src].filter((id) => !seen.has(id)).length, duplicated: ids.length - seen.size, outOfOrder };
}

function writeReport(): void {
  if (!rows.length) return;
  const kinds = (m: Record<string, number> | undefined) =>
    m && Object.keys(m).length
      ? Object.entries(m)
          .map(([k, n]) => `${k} ${n}`)
          .join(', ')
      : '—';
  const md = [
    '# pgferry chaos campaign',
    '',
    `${new Date().toISOString()} — \`PGFERRY_CHAOS_SEEDS=${SEEDS} PGFERRY_CHAOS_SECONDS=${WINDOW_S}${MODE === 'trigger' ? ' PGFERRY_CHAOS_MODE=trigger' : ''} PGFERRY_CHAOS_FEATURES=${FEATURE_LABEL} npm run test:chaos\` (${MODE} capture)`,
    '',
    '| seed | faults injected | source txns (large, beside large, rolled back) | re-sent / abandoned in apply | lost | duplicated | subscriber lost / dup | converged (s) | outcome |',
    '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    ...rows.map(
      (r) =>
        `| ${r.seed} | ${Object.entries(r.faults)
          .map(([k, n]) => (n > 1 ? `${k} ×${n}` : k))
          .join(', ')} | ${r.committed} (${r.large}, ${r.interleaved}, ${r.rolledBack}) | ${r.resent ?? '—'} / ${r.abandoned ?? '—'} | ${r.lost ?? '—'} | ${r.duplicated ?? '—'} | ${r.subscriberLost ?? '—'} / ${r.subscriberDuplicated ?? '—'} | ${r.convergedSeconds?.toFixed(1) ?? '—'} | ${r.outcome.replace(/\|/g, '\\|')} |`,
    ),
    '',
    'What the widened workload did (issue 26), per seed:',
    '',
    '| seed | mode | features | DDL by kind | partition ops by kind | key ops (key moves) | guc sets | stream deletions | joins | resyncs | subscriber stops |',
    '| ---: | --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r.seed} | ${r.mode ?? MODE} | ${r.features ?? '—'} | ${kinds(r.ddl)} | ${kinds(r.partitionOps)} | ${kinds(r.keyOps)} (${r.keyMoves ?? 0}) | ${r.gucSets ?? 0} | ${r.streamDeletions ?? 0} | ${r.joins ?? 0} | ${r.resyncs ?? 0} | ${r.subscriberStops ?? 0} |`,
    ),
    '',
  ].join('\n');
  fs.mkdirSync(RESULTS, { recursive: true });
  // npm run test:chaos writes latest.*; the short run inside npm test writes short-run.* (not kept in git).
  const name = process.env.PGFERRY_CHAOS_REPORT ?? 'short-run';
  fs.writeFileSync(path.join(RESULTS, `${name}.md`), md);
  fs.writeFileSync(path.join(RESULTS, `${name}.json`), `${JSON.stringify(rows, null, 2)}\n`);
  process.stdout.write(`\n${md}\n`);
}
