/**
 * Capture's end of runs (issue 27): whole source transactions that arrive
 * while RabbitMQ has not yet confirmed enough of what was published wait in
 * one open run, published as one message (envelope version 4) as soon as
 * the confirm window has room, or when the run reaches its bound in
 * transactions or bytes. A quiet source finds the window empty and
 * publishes each transaction at once: runs add no latency, they only form
 * under load, where one message per transaction costs the most (framing,
 * confirms, RabbitMQ's work, a delivery and a parse per transaction).
 *
 * Chunks of a large transaction, transactions holding COPY lines (a large
 * one's inserts, envelope version 5) and markers travel alone, after the
 * open run. Each transaction's confirm callback runs when its message (its run)
 * is confirmed: capture acknowledges its position no sooner. A transaction
 * held in the open run counts as published for the ack tracker
 * (capture/wal/ack-tracker.ts), so the slot never passes it before its run
 * is confirmed.
 */
import type { TxnMessage } from '../change';
import { changeBytes, isStreamMarker } from './envelope';
import { isLineInsert } from './copy-lines';
import type { StreamPublisher } from './stream';

export interface RunLimits {
  /** At most this many transactions in one run. */
  txns: number;
  /** A run closes once its changes add up to about this many bytes. */
  bytes: number;
}

/** Defaults, chosen by measurement (README, Performance): a run stays a fraction of a chunk's bound in memory. */
export const DEFAULT_RUN_LIMITS: RunLimits = { txns: 256, bytes: 512 * 1024 };

interface Held {
  m: TxnMessage;
  onConfirm: () => void;
  onNack?: () => void;
}

export class RunPublisher {
  private open: Held[] = [];
  private bytes = 0;
  /** Publishing is one sequence: a flush the window's room starts waits for one in progress. */
  private chain: Promise<void> = Promise.resolve();
  private failure: Error | null = null;

  constructor(
    private readonly pub: StreamPublisher,
    private readonly limits: RunLimits = DEFAULT_RUN_LIMITS,
  ) {
    pub.onRoom = () => {
      if (this.open.length) void this.flush().catch((e: Error) => (this.failure ??= e));
    };
  }

  /** Transactions held in the open run. */
  get holding(): number {
    return this.open.length;
  }

  /**
   * Publish one message of the log. A whole transaction joins the open run
   * when there is one or the window is full; anything else (a chunk, a
   * transaction holding COPY lines, a marker) is published after the open run.
   */
  async publish(m: TxnMessage, onConfirm: () => void, onNack?: () => void): Promise<void> {
    if (this.failure) throw this.failure;
    const whole = m.seq === 0 && m.last && m.gap === undefined && !isStreamMarker(m.lsn) && !m.changes.some(isLineInsert);
    if (!whole || this.limits.txns <= 1) {
      await this.flush();
      return this.serial(() => this.pub.publish(m, onConfirm, onNack));
    }
    if (!this.open.length && this.pub.hasRoom) return this.serial(() => this.pub.publish(m, onConfirm, onNack));
    this.open.push({ m, onConfirm, onNack });
    for (const c of m.changes) this.bytes += changeBytes(c);
    if (this.open.length >= this.limits.txns || this.bytes >= this.limits.bytes || this.pub.hasRoom) await this.flush();
  }

  /** Publish the open run now (before a stop, or before a message that must come after it). */
  async flush(): Promise<void> {
    if (this.failure) throw this.failure;
    await this.serial(async () => {
      const run = this.open;
      if (!run.length) return;
      this.open = [];
      this.bytes = 0;
      await this.pub.publishRun(
        run.map((h) => h.m),
        () => {
          for (const h of run) h.onConfirm();
        },
        () => {
          for (const h of run) h.onNack?.();
        },
      );
    });
  }

  private serial(fn: () => Promise<void>): Promise<void> {
    const next = this.chain.then(fn);
    this.chain = next.catch(() => undefined);
    return next;
  }
}
