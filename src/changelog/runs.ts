/**
 * Capture's end of runs (issue 27): whole source transactions that arrive
 * while RabbitMQ has not yet confirmed enough of what was published wait in
 * one open run, published as one message (envelope version 4) as soon as
 * the run's confirm window (RUN_IN_FLIGHT) has room, or when the run reaches its bound in
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

/**
 * The run's confirm window: a transaction goes at once, and the open run is
 * closed, while fewer messages than this are unconfirmed. The publisher's
 * own window (64, stream.ts) is for throughput; with it as the run's, RabbitMQ
 * confirmed fast enough under W3 that a third of the transactions still went
 * one per message. A quiet source has nothing unconfirmed, so each of its
 * transactions still goes at once.
 */
export const RUN_IN_FLIGHT = 4;

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
  /** Steps in `chain` not yet done: a transaction published in the background waits for none. */
  private queued = 0;
  private failure: Error | null = null;
  /** Called once when a publish nobody waits for fails (capture stops on it). */
  onFailure: (e: Error) => void = () => undefined;

  constructor(
    private readonly pub: StreamPublisher,
    private readonly limits: RunLimits = DEFAULT_RUN_LIMITS,
  ) {
    pub.onRoom = () => {
      if (this.open.length && this.room) this.background(() => this.publishOpen());
    };
  }

  /** Room in the run's confirm window (RUN_IN_FLIGHT). */
  private get room(): boolean {
    return this.pub.pending < RUN_IN_FLIGHT && this.pub.hasRoom;
  }

  /** Transactions held in the open run. */
  get holding(): number {
    return this.open.length;
  }

  /**
   * Publish one message of the log. A whole transaction joins the open run
   * when there is one or the window is full; anything else (a chunk, a
   * transaction holding COPY lines, a marker) is published after the open run.
   *
   * Returns a promise only when the caller must wait: the message must
   * follow the open run, or the run reached its bound. Otherwise the
   * transaction is published in the background (an empty window) or held,
   * with no promise for the caller (capture handles most messages without
   * one: capture/wal/stream-changes.ts); a failure then reaches `onFailure`
   * and the next call.
   */
  publish(m: TxnMessage, onConfirm: () => void, onNack?: () => void): Promise<void> | undefined {
    if (this.failure) throw this.failure;
    const whole = m.seq === 0 && m.last && m.gap === undefined && !isStreamMarker(m.lsn) && !m.changes.some(isLineInsert);
    if (!whole || this.limits.txns <= 1) return this.flush().then(() => this.serial(() => this.pub.publish(m, onConfirm, onNack)));
    if (!this.open.length && this.room && !this.queued) {
      this.background(() => this.pub.publish(m, onConfirm, onNack));
      return undefined;
    }
    this.open.push({ m, onConfirm, onNack });
    for (const c of m.changes) this.bytes += changeBytes(c);
    if (this.open.length >= this.limits.txns || this.bytes >= this.limits.bytes) return this.flush();
    if (this.room && !this.queued) this.background(() => this.publishOpen());
    return undefined;
  }

  /** Publish the open run now (before a stop, or before a message that must come after it). */
  async flush(): Promise<void> {
    if (this.failure) throw this.failure;
    await this.serial(() => this.publishOpen());
  }

  private async publishOpen(): Promise<void> {
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
  }

  /** A step of the sequence nobody waits for: its failure fails the publisher. */
  private background(fn: () => Promise<void>): void {
    this.serial(fn).catch((e: Error) => {
      if (this.failure) return;
      this.failure = e;
      this.onFailure(e);
    });
  }

  private serial(fn: () => Promise<void>): Promise<void> {
    this.queued += 1;
    const next = this.chain.then(fn).finally(() => void (this.queued -= 1));
    this.chain = next.catch(() => undefined);
    return next;
  }
}
