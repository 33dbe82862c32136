/**
 * One delivery session of one subscriber: read the log from its stored
 * position and hand each transaction (or each change) to the handler, in
 * source commit order, storing the position after each one.
 *
 * - Not transactional: the position is stored right after the handler
 *   returns. A crash in between delivers that one transaction again (with the
 *   same change ids): at least once, and the window is the transaction in
 *   flight.
 * - Transactional: the handler gets `ctx.client`, inside a transaction of the
 *   positions database that also stores the position: its writes there and
 *   the position commit together, so effects happen exactly once.
 *
 * A throwing handler is retried with backoff; after `maxAttempts` the
 * session stops with a HandlerFailedError naming the change, and the stored
 * position stays before its transaction.
 */
import type pg from 'pg';
import type { ChannelModel } from 'amqplib';
import { relLabel } from '../change';
import { ConfigError, HandlerFailedError, describeCause } from '../errors';
import { LogCursor, LogPosition } from '../changelog/cursor';
import type { Logger } from '../logger';
import { ChangeEvent, CompiledFilter, TransactionEvent, eventsOf } from './events';
import type { PositionStore } from './positions';

export interface HandlerContext {
  subscriber: string;
  /** 1 on the first call for this event, 2 on its first retry, … */
  attempt: number;
  /** With `transactional: true`: the connection whose open transaction also stores the position. Write your effects on it. Null otherwise. */
  client: pg.ClientBase | null;
}

export type Handler<E> = (event: E, ctx: HandlerContext) => unknown;

export type Delivery = { deliver: 'transaction'; handler: Handler<TransactionEvent> } | { deliver: 'change'; handler: Handler<ChangeEvent> };

export interface RetryOptions {
  /** Calls of the handler for one event before the subscriber stops (default 5). */
  maxAttempts?: number;
  /** Wait before the first retry (default 1000 ms), doubled each time… */
  initialDelayMs?: number;
  /** …up to this (default 30000 ms). */
  maxDelayMs?: number;
}

export const DEFAULT_RETRY: Required<RetryOptions> = { maxAttempts: 5, initialDelayMs: 1000, maxDelayMs: 30_000 };

export interface SessionOptions {
  name: string;
  source: string;
  filter: CompiledFilter;
  delivery: Delivery;
  transactional: boolean;
  store: PositionStore;
  rabbit: ChannelModel;
  retry: Required<RetryOptions>;
  log: Logger;
  /** Ends the session at the next transaction boundary (a transaction in flight is left for the next session). */
  signal: AbortSignal;
  /** Batch limits (Temporal activities): end at a transaction boundary after this many delivered transactions… */
  maxTxns?: number;
  /** …or after this long; also, once something was delivered, when the log has had nothing more for a moment. */
  maxWaitMs?: number;
  heartbeat?: () => void;
  /** After each stored position. */
  onProgress?: (p: SessionProgress) => void;
}

export interface SessionProgress {
  position: LogPosition;
  /** Transactions and changes handed to the handler in this session. */
  txns: number;
  changes: number;
  /** Since the subscriber began (the counts in its positions row). */
  totalTxns: number;
  totalChanges: number;
  lastCommitTime: string | null;
}

export interface SessionResult extends SessionProgress {
  /** The log had nothing more when the session ended. */
  caughtUp: boolean;
}

interface OpenTxn {
  lsn: string;
  commitTime: string;
  xid: number;
  nextIndex: number;
  /** Transaction delivery: the events collected so far. */
  events: ChangeEvent[];
  /** Changes handed to the handler (change delivery). */
  delivered: number;
  /** Transactional change delivery: the connection holding the open transaction. */
  client: pg.PoolClient | null;
}

class Stopped extends Error {}

const IDLE_MS = 200;
/** Filtered-out transactions move the stored position at most this often (nothing to redo if lost). */
const SKIP_FLUSH_MS = 1000;

export async function runSession(o: SessionOptions): Promise<SessionResult> {
  const stored = await o.store.get(o.name);
  if (!stored) {
    throw new ConfigError(
      `subscriber '${o.name}' has no row in ${o.store.label} any more (deleted, or the database restored from an older backup?); ` +
        `start the subscriber again: it begins anew where its 'from' option says`,
    );
  }
  let committed: LogPosition = { lsn: stored.lsn, offset: stored.offset, stream: stored.stream };
  let skipped: LogPosition | null = null;
  let skippedAt = Date.now();
  const result: SessionResult = { position: committed, txns: 0, changes: 0, totalTxns: stored.txns, totalChanges: stored.changes, lastCommitTime: null, caughtUp: false };
  const cursor = await LogCursor.open(o.rabbit, o.source, committed, {
    consumer: `subscriber '${o.name}'`,
    fix: `its application must rebuild what it derives from these changes; then delete the subscriber's row in ${o.store.label} and start it again (from 'now' or 'beginning')`,
    prefetch: 128,
  });
  let txn: OpenTxn | null = null;
  const started = Date.now();

  const store = async (q: pg.ClientBase | pg.Pool, to: LogPosition, txns: number, changes: number) => {
    await o.store.advance(q, o.name, committed.lsn, to, txns, changes);
    committed = to;
    skipped = null;
    result.position = to;
  };
  const flushSkipped = async () => {
    if (skipped) await store(o.store.db, skipped, 0, 0);
  };

  try {
    for (;;) {
      if (!txn) {
        if (o.signal.aborted) break;
        if (o.maxTxns !== undefined && result.txns >= o.maxTxns) break;
        if (o.maxWaitMs !== undefined && Date.now() - started >= o.maxWaitMs) break;
        if (skipped && Date.now() - skippedAt >= SKIP_FLUSH_MS) await flushSkipped();
      } else if (o.signal.aborted) {
        break; // the transaction in flight is delivered again by the next session
      }
      const wait = !txn && o.maxWaitMs !== undefined && result.txns > 0 ? IDLE_MS : 1000;
      const item = await cursor.next(wait);
      o.heartbeat?.();
      if (!item) {
        if (!txn) {
          result.caughtUp = true;
          await flushSkipped();
          if (o.maxWaitMs !== undefined && result.txns > 0) break;
        }
        continue;
      }
      result.caughtUp = false;
      if (item.kind === 'restart') {
        // Capture re-sends this transaction from its start: drop what we had of it (and any writes made for it).
        await abandon(txn);
        txn = null;
        continue;
      }
      const { m, offset } = item;
      if (m.seq === 0) txn = { lsn: m.lsn, commitTime: m.commitTime, xid: m.xid, nextIndex: 0, events: [], delivered: 0, client: null };
      const t = txn!;
      const { events, nextIndex } = eventsOf(m, t.nextIndex, o.filter);
      t.nextIndex = nextIndex;
      if (o.delivery.deliver === 'change') {
        for (const ev of events) await deliverChange(o, t, ev);
      } else {
        t.events.push(...events);
      }
      if (!m.last) continue;

      // `txn` stays set until the position is stored, so a failure here still rolls back its open transaction.
      const to = { lsn: m.lsn, offset, stream: cursor.position.stream ?? null };
      if (o.delivery.deliver === 'transaction' && t.events.length) {
        const ev: TransactionEvent = { source: o.source, lsn: t.lsn, commitTime: t.commitTime, xid: t.xid, changes: t.events };
        await deliverTransaction(o, ev, async (client) => store(client ?? o.store.db, to, 1, ev.changes.length));
        t.delivered = ev.changes.length;
      } else if (t.delivered) {
        if (t.client) {
          await store(t.client, to, 1, t.delivered);
          await commit(t);
        } else {
          await store(o.store.db, to, 1, t.delivered);
        }
      } else {
        // Nothing in it for this subscriber: remember the position, store it a little later.
        if (!skipped) skippedAt = Date.now();
        skipped = to;
        result.position = to;
        txn = null;
        continue;
      }
      txn = null;
      result.txns += 1;
      result.changes += t.delivered;
      result.totalTxns += 1;
      result.totalChanges += t.delivered;
      result.lastCommitTime = t.commitTime;
      o.onProgress?.({ ...result });
    }
    await flushSkipped();
    return result;
  } catch (err) {
    if (err instanceof Stopped) return result;
    throw err;
  } finally {
    await abandon(txn);
    await cursor.close();
  }

  async function abandon(t: OpenTxn | null): Promise<void> {
    if (!t?.client) return;
    await t.client.query('ROLLBACK').catch(() => undefined);
    t.client.release();
    t.client = null;
  }
}

async function commit(t: OpenTxn): Promise<void> {
  const c = t.client!;
  t.client = null;
  try {
    await c.query('COMMIT');
  } finally {
    c.release();
  }
}

async function deliverChange(o: SessionOptions, t: OpenTxn, ev: ChangeEvent): Promise<void> {
  const handler = o.delivery.handler as Handler<ChangeEvent>;
  if (o.transactional && !t.client) {
    t.client = await o.store.db.connect();
    await t.client.query('BEGIN');
  }
  const c = t.client;
  await withRetries(o, () => describeChange(ev), async (attempt) => {
    if (c) await c.query('SAVEPOINT pgferry_handler');
    try {
      await handler(ev, { subscriber: o.name, attempt, client: c });
    } catch (err) {
      if (c) await c.query('ROLLBACK TO SAVEPOINT pgferry_handler').catch((e: unknown) => Promise.reject(new NotTheHandler(e)));
      throw err;
    }
    if (c) await c.query('RELEASE SAVEPOINT pgferry_handler');
  });
  t.delivered += 1;
}

async function deliverTransaction(o: SessionOptions, ev: TransactionEvent, storePosition: (client: pg.ClientBase | null) => Promise<void>): Promise<void> {
  const handler = o.delivery.handler as Handler<TransactionEvent>;
  if (!o.transactional) {
    await withRetries(o, () => describeTransaction(ev), (attempt) => handler(ev, { subscriber: o.name, attempt, client: null }));
    await storePosition(null);
    return;
  }
  // Each attempt is one transaction: the handler's writes and the position, or neither.
  const c = await o.store.db.connect();
  let broken = false;
  try {
    await withRetries(o, () => describeTransaction(ev), async (attempt) => {
      await c.query('BEGIN');
      try {
        await handler(ev, { subscriber: o.name, attempt, client: c });
      } catch (err) {
        await c.query('ROLLBACK').catch((e: unknown) => Promise.reject(new NotTheHandler(e)));
        throw err;
      }
      try {
        await storePosition(c);
        await c.query('COMMIT');
      } catch (err) {
        await c.query('ROLLBACK').catch(() => undefined);
        throw new NotTheHandler(err);
      }
    });
  } catch (err) {
    broken = !(err instanceof HandlerFailedError);
    throw err;
  } finally {
    c.release(broken);
  }
}

/** A failure of pgferry's own bookkeeping inside an attempt: not retried as a handler failure. */
class NotTheHandler extends Error {
  constructor(readonly inner: unknown) {
    super('not the handler');
  }
}

async function withRetries(o: SessionOptions, what: () => string, attempt: (n: number) => unknown): Promise<void> {
  for (let n = 1; ; n++) {
    try {
      await attempt(n);
      return;
    } catch (err) {
      if (err instanceof NotTheHandler) throw err.inner;
      const cause = describeCause(err);
      if (n >= o.retry.maxAttempts) {
        throw new HandlerFailedError(
          `subscriber '${o.name}': the handler failed ${n === 1 ? 'once' : `${n} times`} on ${what()}: ${cause}; ` +
            `fix the handler (or what it writes to), then start the subscriber again: it continues from this change`,
          { cause: err, subscriber: o.name },
        );
      }
      const delay = Math.min(o.retry.maxDelayMs, o.retry.initialDelayMs * 2 ** (n - 1));
      o.log.warn({ attempt: n, retryInMs: delay, error: cause }, `handler failed on ${what()}; retrying`);
      await sleep(delay, o.signal);
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new Stopped());
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new Stopped());
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** "update of public.orders key {"id":"42"} (change main/0/1A2B/3, source position 0/1A2B, committed …)". */
export function describeChange(ev: ChangeEvent): string {
  const key = ev.key && Object.keys(ev.key).length ? ` key ${JSON.stringify(ev.key)}` : '';
  return `${ev.operation} of ${relLabel(ev)}${key} (change ${ev.id}, source position ${ev.lsn}, committed ${ev.commitTime})`;
}

function describeTransaction(ev: TransactionEvent): string {
  const first = ev.changes[0];
  return (
    `transaction ${ev.lsn} (committed ${ev.commitTime}, ${ev.changes.length} change${ev.changes.length === 1 ? '' : 's'}` +
    (first ? `, the first: ${describeChange(first)}` : '') +
    ')'
  );
}
