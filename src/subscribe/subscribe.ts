/**
 * subscribe(): an application's durable, ordered feed of a source's changes.
 *
 *   const sub = subscribe({
 *     name: 'search-index', source: 'main', tables: ['public.products'],
 *     from: 'beginning', position: { url: process.env.APP_DATABASE_URL },
 *     handler: async (txn) => { for (const c of txn.changes) await index(c); },
 *   });
 *   await sub.done; // rejects if the subscriber stops on a failing change
 *
 * Each subscriber name has its own position (a row in the positions table),
 * so several applications, or several parts of one, read the same log
 * independently. `from` is only used the first time a name is seen; after
 * that the stored position wins.
 */
import pg from 'pg';
import type { ChannelModel } from 'amqplib';
import { DEFAULTS } from '../config';
import { ConfigError, HandlerFailedError, PgferryError, describeCause, isTransient } from '../errors';
import { redactText } from '../redact';
import { endOfLog, START_OF_LOG, LogPosition } from '../changelog/cursor';
import { connectRabbit } from '../changelog/rabbit';
import { requireStream } from '../changelog/stream';
import { logger as rootLogger, Logger } from '../logger';
import { normalizeLsn } from '../lsn';
import { createPool } from '../pg';
import { ChangeEvent, ChangeFilter, TransactionEvent, checkFilter } from './events';
import { DEFAULT_RETRY, Handler, RetryOptions, SessionOptions, SessionProgress, runSession } from './deliver';
import { PositionStore, PositionTable } from './positions';

export type SubscriberFrom = 'now' | 'beginning' | string;

export type SubscribeOptions = ChangeFilter & {
  /** The subscriber's name: the key of its position (and of its workflow, pgferry-subscriber-<name>, under Temporal). */
  name: string;
  /** The pgferry source whose change log to read. */
  source: string;
  /** Where a new subscriber starts: 'now' (default), 'beginning' (the oldest change the stream retains), or an LSN (the transactions committed after it). */
  from?: SubscriberFrom;
  /** Where positions are stored: a database (url or pg.Pool) and optionally the table (default pgferry_subscribers). */
  position: { url?: string; pool?: pg.Pool; table?: string | PositionTable };
  /** Run each transaction's handler calls and the position update in one transaction of the positions database (ctx.client). */
  transactional?: boolean;
  retry?: RetryOptions;
  /** Default: PGFERRY_RABBITMQ_URL, else amqp://guest:guest@127.0.0.1:5672. */
  rabbitmqUrl?: string;
  logger?: Logger;
} & (
    | { /** One call per source transaction (default). */ deliver?: 'transaction'; handler: Handler<TransactionEvent> }
    | { /** One call per change; the position still moves per transaction. */ deliver: 'change'; handler: Handler<ChangeEvent> }
  );

export interface Subscription {
  readonly name: string;
  /** Resolves once the subscriber has its position and reads the log. */
  readonly ready: Promise<void>;
  /** Settles when the subscriber ends: resolves after stop(); rejects with HandlerFailedError (or a configuration error) when it stops by itself. */
  readonly done: Promise<void>;
  /** The last position stored. */
  position(): LogPosition | null;
  /** Stop at the next transaction boundary and wait for it. */
  stop(): Promise<void>;
}

/** The parts of a subscriber every way of running it shares, checked once. */
export interface Prepared {
  name: string;
  source: string;
  base: Omit<SessionOptions, 'rabbit' | 'signal'>;
  rabbitmqUrl: string;
  store: PositionStore;
  /** An error as one line for logs and Temporal, with the passwords of its connection URLs masked. */
  describe(err: unknown): string;
  /** Closes what prepare() opened (the pool, when it made one). */
  close(): Promise<void>;
}

export function prepareSubscriber(o: SubscribeOptions): Prepared {
  const what = `subscriber '${String(o?.name)}'`;
  const problems: string[] = [];
  if (typeof o?.name !== 'string' || !o.name) problems.push('name is required');
  if (typeof o?.source !== 'string' || !o.source) problems.push('source is required (the pgferry source name, e.g. main)');
  if (typeof o?.handler !== 'function') problems.push('handler must be a function');
  if (o?.deliver !== undefined && o.deliver !== 'transaction' && o.deliver !== 'change') problems.push(`deliver must be 'transaction' or 'change', not '${String(o.deliver)}'`);
  if (!o?.position || (!o.position.url && !o.position.pool)) problems.push('position.url or position.pool is required: the database that stores its position');
  if (o?.from !== undefined && o.from !== 'now' && o.from !== 'beginning') {
    try {
      normalizeLsn(o.from);
    } catch {
      problems.push(`from must be 'now', 'beginning' or an LSN such as 0/16B3748, not '${o.from}'`);
    }
  }
  const attempts = o?.retry?.maxAttempts;
  if (attempts !== undefined && !(Number.isInteger(attempts) && attempts >= 1)) problems.push('retry.maxAttempts must be a whole number ≥ 1');
  const { filter, problems: filterProblems } = checkFilter(o ?? {});
  problems.push(...filterProblems);
  if (problems.length) throw new ConfigError(`${what}: ${problems.join('; ')}`);
  const ownPool = !o.position.pool;
  const db = o.position.pool ?? createPool(o.position.url!);
  const store = new PositionStore(db, o.position.table);
  const log = (o.logger ?? rootLogger).child({ subscriber: o.name, source: o.source });
  const rabbitmqUrl = o.rabbitmqUrl ?? process.env.PGFERRY_RABBITMQ_URL ?? DEFAULTS.rabbitmqUrl;
  const secrets = [rabbitmqUrl, o.position.url ?? ''].filter(Boolean);
  return {
    name: o.name,
    source: o.source,
    rabbitmqUrl,
    describe: (err) => redactText(err instanceof PgferryError ? err.message : describeCause(err), secrets),
    store,
    base: {
      name: o.name,
      source: o.source,
      filter,
      delivery: o.deliver === 'change' ? { deliver: 'change', handler: o.handler } : { deliver: 'transaction', handler: o.handler as Handler<TransactionEvent> },
      transactional: o.transactional === true,
      store,
      retry: { ...DEFAULT_RETRY, ...definedOnly(o.retry ?? {}) },
      log,
    },
    async close() {
      if (ownPool) await db.end().catch(() => undefined);
    },
  };
}

const definedOnly = <T extends object>(x: T): Partial<T> => Object.fromEntries(Object.entries(x).filter(([, v]) => v !== undefined)) as Partial<T>;

/**
 * Make sure the subscriber has a stored position: create the table when
 * missing and, for a name seen for the first time, record where `from` says
 * it starts. Returns the stored position.
 */
export async function ensurePosition(p: Prepared, rabbit: ChannelModel, from: SubscriberFrom = 'now'): Promise<LogPosition> {
  await requireStream(rabbit, p.source, `subscriber '${p.name}'`);
  try {
    await p.store.ensureTable();
  } catch (err) {
    throw wrapDbError(p, err);
  }
  const existing = await p.store.get(p.name);
  const start = existing ?? (await startingPoint(rabbit, p.source, from));
  const stored = await p.store.start(p.name, p.source, start);
  return { lsn: stored.lsn, offset: stored.offset, stream: stored.stream };
}

async function startingPoint(rabbit: ChannelModel, source: string, from: SubscriberFrom): Promise<LogPosition> {
  if (from === 'beginning') return START_OF_LOG;
  if (from !== 'now') return { lsn: normalizeLsn(from), offset: null };
  return endOfLog(rabbit, source);
}

function wrapDbError(p: Prepared, err: unknown): Error {
  if (isTransient(err)) return err as Error;
  return new ConfigError(`subscriber '${p.name}': cannot use the positions table ${p.store.label}: ${describeCause(err)}; grant the subscriber's role CREATE on its schema (or create the table as src/subscribe/positions.ts shows), or choose another position.table`, {
    cause: err,
  });
}

/** Run a subscriber in this process until stop(), or until it stops on a failing change. */
export function subscribe(options: SubscribeOptions): Subscription {
  const p = prepareSubscriber(options);
  const stopper = new AbortController();
  let last: LogPosition | null = null;
  let markReady!: () => void;
  let failReady!: (e: unknown) => void;
  const ready = new Promise<void>((resolve, reject) => {
    markReady = resolve;
    failReady = reject;
  });
  ready.catch(() => undefined); // reported through done as well

  const run = async () => {
    let backoff = 1000;
    let started = false;
    for (;;) {
      let rabbit: ChannelModel | null = null;
      try {
        rabbit = await connectRabbit(p.rabbitmqUrl);
        if (!started) {
          last = await ensurePosition(p, rabbit, options.from);
          started = true;
          p.base.log.info({ lsn: last.lsn, offset: last.offset }, 'subscriber started');
          markReady();
        }
        await runSession({
          ...p.base,
          rabbit,
          signal: stopper.signal,
          onProgress: (pr: SessionProgress) => {
            last = pr.position;
            backoff = 1000;
          },
        });
        if (stopper.signal.aborted) return;
      } catch (err) {
        if (err instanceof HandlerFailedError || !isTransient(err)) throw err;
        p.base.log.warn({ error: p.describe(err), retryInMs: backoff }, 'a server connection failed; reconnecting');
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, backoff);
          stopper.signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
        });
        backoff = Math.min(30_000, backoff * 2);
        if (stopper.signal.aborted) return;
      } finally {
        await rabbit?.close().catch(() => undefined);
      }
    }
  };

  const done = run()
    .catch((err) => {
      failReady(err);
      p.base.log.error({ error: p.describe(err) }, 'subscriber stopped');
      throw err;
    })
    .finally(() => p.close());
  return {
    name: p.name,
    ready,
    done,
    position: () => last,
    async stop() {
      stopper.abort();
      await done.catch(() => undefined);
    },
  };
}
