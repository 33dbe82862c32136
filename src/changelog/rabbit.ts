/**
 * Connecting to RabbitMQ with errors that say which server and what to do.
 * Authentication and vhost problems are permanent; refused or dropped
 * connections may pass and are retried by the caller.
 */
import * as amqp from 'amqplib';
import { UnavailableError, ConfigError, describeCause } from '../errors';
import { redactUrl } from '../redact';

export async function connectRabbit(url: string): Promise<amqp.ChannelModel> {
  try {
    // noDelay: without it Nagle's algorithm holds a publish whose frames end in a short write until the
    // broker's delayed ACK (~40 ms): a confirm window of 16 then caps capture at ~350 messages/s for
    // messages of a few kB (measured: 350/s → 3,900/s at 3 kB), and the same holds back a reader's acks.
    const conn = await amqp.connect(url, { timeout: 10_000, noDelay: true });
    coalesceWrites(conn);
    conn.on('error', () => {
      /* reported through 'close' and failing channel calls */
    });
    return conn;
  } catch (err) {
    const cause = describeCause(err);
    const where = `RabbitMQ at ${redactUrl(url)}`;
    if (refusedByBroker(err)) {
      throw new ConfigError(`${where}: access refused (${cause}); check the user, password and vhost in --rabbitmq / PGFERRY_RABBITMQ_URL`, {
        cause: err,
      });
    }
    throw new UnavailableError(
      `${where}: cannot connect (${cause}); start RabbitMQ (npm run setup starts a local one) or fix --rabbitmq / PGFERRY_RABBITMQ_URL`,
      { cause: err },
    );
  }
}

/**
 * The broker itself refused the connection (403 ACCESS_REFUSED, 530 NOT_ALLOWED):
 * permanent. amqplib gives such errors no code, so they are told by the
 * form of its handshake failure, read from the start of the message —
 * never by digits anywhere in it: "connect ECONNREFUSED 127.0.0.1:40353"
 * is a server not there (a system error, with a code), not a 403.
 */
function refusedByBroker(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  if (typeof e?.code === 'string') return false; // ECONNREFUSED, ETIMEDOUT, …: the network's answer
  const msg = typeof e?.message === 'string' ? e.message : '';
  return /^Handshake terminated by server: (403|530) /.test(msg);
}

/**
 * amqplib writes every frame to the socket on its own: with TCP_NODELAY each
 * is a send() through the whole loopback TCP stack, which cost capture a
 * quarter of its CPU at 2,000 messages/s (profile: writeBuffer 23% self).
 * Corking the socket at the first write of an event-loop turn and uncorking
 * it right after (setImmediate) sends that turn's frames — many publishes or
 * acks — in one writev, with no added wait.
 */
function coalesceWrites(conn: amqp.ChannelModel): void {
  const sock = (conn as unknown as { connection?: { stream?: { cork?: () => void; uncork?: () => void; write: (...a: unknown[]) => boolean } } }).connection?.stream;
  if (!sock?.cork || !sock.uncork) return; // not a net.Socket (amqplib internals changed): plain writes still work
  const write = sock.write.bind(sock);
  let corked = false;
  sock.write = (...args: unknown[]) => {
    if (!corked) {
      corked = true;
      sock.cork!();
      setImmediate(() => {
        corked = false;
        sock.uncork!();
      });
    }
    return write(...args);
  };
}

/** One RabbitMQ connection kept for a process's lifetime and opened again after it drops. */
export class SharedRabbit {
  private conn: Promise<amqp.ChannelModel> | null = null;

  constructor(private readonly url: string) {}

  get(): Promise<amqp.ChannelModel> {
    if (!this.conn) {
      const opening = connectRabbit(this.url);
      this.conn = opening;
      const forget = () => {
        if (this.conn === opening) this.conn = null;
      };
      opening.then((c) => c.on('close', forget), forget);
    }
    return this.conn;
  }

  async close(): Promise<void> {
    const c = this.conn;
    this.conn = null;
    await c?.then((x) => x.close()).catch(() => undefined);
  }
}
