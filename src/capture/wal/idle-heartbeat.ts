/**
 * Idle-source heartbeat for WAL capture. The slot moves only when a
 * transaction comes back through it, so a source whose published tables are
 * quiet would pin its WAL (other tables, other databases, checkpoints keep
 * writing it) until the disk fills. Every `intervalMs` without a transaction,
 * capture writes a transactional logical message on an ordinary connection;
 * pgoutput sends it back (capture asks for `messages`) as BEGIN, MESSAGE,
 * COMMIT, and it queues behind every earlier transaction in the ack tracker,
 * so the slot moves past it only once RabbitMQ confirmed them all.
 *
 * Decision: the heartbeat is acknowledged, not published. Published, it would
 * be an empty transaction on the stream: each replica would apply and count
 * it, applications reading the stream would see it, and replica lag would be
 * measured to it; nothing needs it there, since a replica's position only has
 * to cover the transactions it applies.
 *
 * A source that refuses the write (a read-only standby, a missing privilege)
 * gets one warning naming the cause (per worker process and kind of failure),
 * then capture keeps trying quietly each interval; it never fails capture.
 * Keepalive positions still move the slot then.
 */
import type pg from 'pg';
import { classifyError, describeCause, isPrivilegeError, isReadOnlyServer } from '../../errors';
import type { Logger } from '../../logger';
import { connectPg } from '../../pg';
import { redactText } from '../../redact';

/** Prefix of the logical messages capture writes on an idle source. */
export const HEARTBEAT_PREFIX = 'pgferry.heartbeat';

/** Per source, the kind of heartbeat failure already warned about in this process (capture restarts every few minutes). */
const warned = new Map<string, string>();

export class IdleHeartbeat {
  private client: pg.Client | null = null;
  private beating = false;
  private stopped = false;
  private lastTxnAt = Date.now();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly o: {
      source: string;
      url: string;
      log: Logger;
      intervalMs: number;
      /** True while a heartbeat must not be written (a transaction is open, or capture failed). */
      busy: () => boolean;
    },
  ) {}

  /** A transaction came through the slot: the source is not idle. */
  noteTransaction(): void {
    this.lastTxnAt = Date.now();
  }

  start(): void {
    this.timer = setInterval(() => void this.beat(), Math.max(50, Math.min(this.o.intervalMs / 4, 1000)));
  }

  /** Stop writing (no new beat starts); `close` ends the connection. */
  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  async close(): Promise<void> {
    this.stop();
    await this.client?.end().catch(() => undefined);
  }

  private async beat(): Promise<void> {
    if (this.beating || this.stopped || this.o.busy() || Date.now() - this.lastTxnAt < this.o.intervalMs) return;
    this.beating = true;
    this.lastTxnAt = Date.now(); // the next try is one interval later, whether this one works or not
    const { source, url, log } = this.o;
    try {
      if (!this.client) {
        const c = await connectPg(`source '${source}'`, url, { application_name: 'pgferry heartbeat' });
        if (this.stopped) {
          await c.end().catch(() => undefined);
          return;
        }
        this.client = c;
      }
      await this.client.query('SELECT pg_catalog.pg_logical_emit_message(true, $1::text, $2::text)', [
        HEARTBEAT_PREFIX,
        JSON.stringify({ source, at: new Date().toISOString() }),
      ]);
      if (warned.delete(source)) log.info(`source '${source}': the idle heartbeat is written again`);
    } catch (err) {
      this.failed(err);
    } finally {
      this.beating = false;
    }
  }

  private failed(err: unknown): void {
    const { source, url, log } = this.o;
    // The server refusing the statement leaves the connection usable; anything else opens a new one next time.
    if (classifyError(err) !== 'refused') {
      const c = this.client;
      this.client = null;
      void c?.end().catch(() => undefined);
    }
    const kind = (err as { code?: string })?.code ?? (err as Error)?.message ?? 'error';
    if (this.stopped || warned.get(source) === kind) return;
    warned.set(source, kind);
    const fix = isPrivilegeError(err)
      ? 'GRANT EXECUTE ON FUNCTION pg_catalog.pg_logical_emit_message(boolean, text, text) to the capture role'
      : isReadOnlyServer(err)
        ? 'capture from the primary, not a read-only standby'
        : 'check the source';
    const cause = redactText(describeCause(err), [url]);
    log.warn(
      { error: cause },
      `source '${source}': cannot write the idle heartbeat (${cause}); while the published tables are quiet the slot then moves only with the server's keepalives and the source may keep WAL for it: ${fix}`,
    );
  }
}
