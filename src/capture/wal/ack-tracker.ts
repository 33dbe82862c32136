/**
 * Capture's acknowledgement bookkeeping, pure: which source position the
 * slot may be acknowledged with. A transaction is released once it has
 * committed on the source (its end position is known) and RabbitMQ has
 * confirmed every message published for it — and only together with every
 * transaction before it. A nack freezes the position for good (capture then
 * fails and restarts from the slot). A keepalive moves the position to the
 * server's when nothing is in flight: everything before it was sent, and
 * transactions touching no published table are not sent at all.
 *
 * The property (test/unit/ack-tracker.property.test.ts): the position never
 * passes the commit of a transaction whose messages RabbitMQ has not all
 * confirmed.
 */
import { compareLsn, normalizeLsn } from '../../lsn';

export interface TrackedTxn {
  readonly id: number;
}

interface Pending extends TrackedTxn {
  unconfirmed: number;
  published: number;
  commit: { lsn: string; endLsn: string; commitTime: string; changes: number } | null;
  released: boolean;
}

/** What a released transaction contributes to capture's counters. */
export interface Released {
  lsn: string;
  commitTime: string;
  changes: number;
}

export class AckTracker {
  private pending: Pending[] = [];
  private nextId = 0;
  private nacked = false;
  private pos: string;

  constructor(start: string) {
    this.pos = normalizeLsn(start);
  }

  /** The position the slot may be acknowledged with. */
  get position(): string {
    return this.pos;
  }

  /** Nothing begun and not yet released. */
  get idle(): boolean {
    return this.pending.length === 0;
  }

  /** A source transaction begins (BEGIN decoded). */
  begin(): TrackedTxn {
    const t: Pending = { id: this.nextId++, unconfirmed: 0, published: 0, commit: null, released: false };
    this.pending.push(t);
    return t;
  }

  /** A message of `t` was handed to RabbitMQ. */
  published(t: TrackedTxn): void {
    const p = this.find(t);
    p.unconfirmed += 1;
    p.published += 1;
  }

  /** RabbitMQ confirmed one message of `t`. Returns what was released, in order (the position moved if any). */
  confirmed(t: TrackedTxn): Released[] {
    const p = this.find(t);
    if (p.unconfirmed <= 0) throw new Error('ack tracker: a confirm for a message that was not published');
    p.unconfirmed -= 1;
    return this.advance();
  }

  /** RabbitMQ refused a message: nothing at or after it may ever be acknowledged by this capture. */
  nack(): void {
    this.nacked = true;
  }

  /** `t` committed on the source at `lsn`, its commit record ending at `endLsn`. */
  commit(t: TrackedTxn, c: { lsn: string; endLsn: string; commitTime: string; changes: number }): Released[] {
    this.find(t).commit = c;
    return this.advance();
  }

  /** The server's keepalive position: taken when nothing is in flight. Returns whether the position moved. */
  keepalive(lsn: string): boolean {
    if (this.nacked || this.pending.length) return false;
    return this.moveTo(lsn);
  }

  private advance(): Released[] {
    const out: Released[] = [];
    if (this.nacked) return out;
    while (this.pending.length && this.pending[0].commit && this.pending[0].unconfirmed === 0) {
      const t = this.pending.shift()!;
      t.released = true;
      const c = t.commit!;
      this.moveTo(c.endLsn);
      // An empty transaction (a heartbeat, another program's logical message) moves the slot but is no captured transaction.
      if (t.published) out.push({ lsn: c.lsn, commitTime: c.commitTime, changes: c.changes });
    }
    return out;
  }

  private moveTo(lsn: string): boolean {
    if (compareLsn(lsn, this.pos) <= 0) return false;
    this.pos = normalizeLsn(lsn);
    return true;
  }

  private find(t: TrackedTxn): Pending {
    const p = t as Pending;
    if (p.released) throw new Error(`ack tracker: transaction #${t.id} was released already`);
    return p;
  }
}
