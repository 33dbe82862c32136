import pg from 'pg';
import { afterAll, beforeAll, beforeEach } from 'vitest';
import * as amqp from 'amqplib';
import type { Change, RelationInfo, Row, TxnMessage } from '../../src/change';
import { relKey } from '../../src/change';
import { applyBatch, BatchResult } from '../../src/apply/apply-batch';
import { applySession, SessionResult } from '../../src/apply/apply-session';
import { ensureTargetSchema } from '../../src/apply/target';
import { declareStream, StreamPublisher } from '../../src/changelog/stream';
import { logger } from '../../src/logger';
import { formatLsn } from '../../src/lsn';
import { PgCluster } from './pg-cluster';
import { RABBIT_URL, deleteStream } from './fixture';

/**
 * Apply driven by a log the test writes itself: messages published straight
 * to a stream of the machine's RabbitMQ (a source name of the test's own),
 * applied by the library's applyBatch to a private PostgreSQL database — no
 * capture, no Temporal. For the cases capture cannot be made to produce on
 * cue: a transaction re-sent from chunk 0 after small ones, chunks out of
 * order, a new source history, an envelope of another version.
 */
export class CraftedLog {
  source = '';
  private publisher: StreamPublisher | null = null;
  private constructor(
    readonly cluster: PgCluster,
    readonly rabbit: amqp.ChannelModel,
    readonly db: string,
  ) {}

  static async create(): Promise<CraftedLog> {
    const cluster = await PgCluster.start();
    await cluster.createDatabase('replica');
    const rabbit = await amqp.connect(RABBIT_URL, { noDelay: true });
    return new CraftedLog(cluster, rabbit, 'replica');
  }

  /** A new stream and a replica database holding only `schema` (and no position). */
  async reset(schema: string): Promise<void> {
    await this.publisher?.close();
    if (this.source) await deleteStream(this.source).catch(() => undefined);
    this.source = `c${Math.random().toString(36).slice(2, 10)}`;
    const { id } = await declareStream(this.rabbit, this.source, { maxBytes: 0, maxAge: '', segmentBytes: 1_000_000 });
    this.publisher = await StreamPublisher.open(this.rabbit, this.source, id);
    await this.cluster.withClient(this.db, (c) => c.query(`DROP SCHEMA IF EXISTS public, pgferry CASCADE; CREATE SCHEMA public; ${schema}`));
  }

  /** Publish messages, in order, and wait for RabbitMQ's confirms. */
  async publish(...ms: TxnMessage[]): Promise<void> {
    for (const m of ms) await this.publisher!.publish(m, () => undefined);
    await this.publisher!.flush();
  }

  /** Publish whole transactions as one run (one message), and wait for RabbitMQ's confirm. */
  async publishRun(...ms: TxnMessage[]): Promise<void> {
    await this.publisher!.publishRun(ms, () => undefined);
    await this.publisher!.flush();
  }

  /** Publish raw bodies (not pgferry's envelope). */
  async publishRaw(body: Buffer, lsn: string): Promise<void> {
    const ch = await this.rabbit.createConfirmChannel();
    ch.sendToQueue(`pgferry.${this.source}.changes`, body, { headers: { 'pgferry-lsn': lsn } });
    await ch.waitForConfirms();
    await ch.close();
  }

  async client(): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: this.cluster.url(this.db) });
    await c.connect();
    await ensureTargetSchema(c);
    return c;
  }

  /** One apply batch for replica 'r'. */
  async apply(opts: { chunkWaitMs?: number; maxWaitMs?: number; maxChanges?: number; windowChanges?: number; client?: pg.Client; netChange?: boolean } = {}): Promise<BatchResult> {
    const c = opts.client ?? (await this.client());
    try {
      return await applyBatch({
        replica: 'r',
        source: this.source,
        client: c,
        rabbit: this.rabbit,
        maxChanges: opts.maxChanges ?? 10_000,
        maxWaitMs: opts.maxWaitMs ?? 1500,
        chunkWaitMs: opts.chunkWaitMs ?? 1000,
        idleMs: 300,
        heartbeat: () => undefined,
        log: logger.child({ test: true }),
        netChange: opts.netChange,
        windowChanges: opts.windowChanges,
      });
    } finally {
      if (!opts.client) await c.end();
    }
  }

  /** An apply session for replica 'r' (batches until `signal` or `maxRunMs`); `onBatch` sees each commit. */
  async session(o: { signal?: AbortSignal; maxRunMs: number; maxChanges?: number; maxWaitMs?: number; chunkWaitMs?: number; onBatch?: (total: SessionResult, b: BatchResult) => void }): Promise<SessionResult> {
    const c = await this.client();
    try {
      return await applySession({
        replica: 'r',
        source: this.source,
        client: c,
        rabbit: this.rabbit,
        maxChanges: o.maxChanges ?? 10_000,
        maxWaitMs: o.maxWaitMs ?? 300,
        chunkWaitMs: o.chunkWaitMs ?? 1000,
        idleMs: 50,
        heartbeat: () => undefined,
        heartbeatMs: 250,
        log: logger.child({ test: true }),
        signal: o.signal,
        maxRunMs: o.maxRunMs,
        onBatch: o.onBatch,
      });
    } finally {
      await c.end();
    }
  }

  async rows(sql: string): Promise<unknown[]> {
    return this.cluster.withClient(this.db, async (c) => (await c.query(sql)).rows);
  }

  async close(): Promise<void> {
    await this.publisher?.close();
    if (this.source) await deleteStream(this.source).catch(() => undefined);
    await this.rabbit.close().catch(() => undefined);
    this.cluster.destroy();
  }
}

/**
 * A suite on one CraftedLog: created before its tests, closed after them,
 * and reset to `schema` (its own stream, an empty replica) before each.
 * `set` receives it: `let log: CraftedLog; useCraftedLog(SCHEMA, (l) => (log = l));`.
 */
export function useCraftedLog(schema: string, set: (log: CraftedLog) => void): void {
  let log: CraftedLog | undefined;
  beforeAll(async () => {
    log = await CraftedLog.create();
    set(log);
  });
  afterAll(async () => {
    await log?.close();
  });
  beforeEach(async () => {
    await log!.reset(schema);
  });
}

/** A relation of the crafted log: id bigint key, v text. */
export function relation(table: string, opts: Partial<RelationInfo> = {}): RelationInfo {
  return {
    schema: 'public',
    table,
    identity: 'default',
    columns: [
      { name: 'id', type: 'bigint', key: true },
      { name: 'v', type: 'text', key: false },
    ],
    ...opts,
  };
}

/** A transaction's message (or one chunk of it) at position `at` (a number, as an LSN). */
export function txn(at: number, changes: (Change & { rel?: string })[], o: { seq?: number; last?: boolean; history?: string; rels?: RelationInfo[] } = {}): TxnMessage {
  const rels = o.rels ?? [relation('a'), relation('b')];
  const lsn = formatLsn(BigInt(at));
  const m: TxnMessage = {
    v: 1,
    source: 'crafted',
    xid: at,
    lsn,
    endLsn: o.last === false ? '' : lsn,
    commitTime: '2026-01-01T00:00:00.000000Z',
    seq: o.seq ?? 0,
    last: o.last ?? true,
    relations: Object.fromEntries(rels.map((r) => [relKey(r.schema, r.table), r])),
    changes,
  };
  if (o.history) m.history = o.history;
  return m;
}

export const ins = (table: string, row: Row): Change => ({ op: 'insert', rel: relKey('public', table), new: row });
export const upd = (table: string, old: Row, row: Row): Change => ({ op: 'update', rel: relKey('public', table), old, new: row });
export const del = (table: string, old: Row): Change => ({ op: 'delete', rel: relKey('public', table), old });
