import { decodeTxn } from '../change';
import { GapError } from '../errors';
import { compareLsn } from '../lsn';
import type { StreamMessage } from './stream';

/**
 * The one proof a consumer of the stream (replica or subscriber) has that
 * nothing it still needed was removed: the first message it reads must be
 * the very one it consumed last. Offsets are not dense (RabbitMQ skips some
 * where segments roll over), so finding that message is the only proof. A
 * later first message means retention cut past it; the same offset holding a
 * later transaction means the stream was deleted and re-created. Either way
 * the consumer stops loudly and never skips.
 */
export interface Consumer {
  /** "replica 'b'" */
  who: string;
  noun: 'replica' | 'subscriber';
  /** What the consumer does with changes: 'applied', 'received'. */
  did: string;
  source: string;
  /** What to do about a gap. */
  fix: string;
  /** Appended when retention removed what the consumer needed. */
  retentionHint?: string;
}

export function checkContinuity(c: Consumer, stored: { offset: number; lsn: string }, msg: StreamMessage): void {
  const stream = `the stream of source '${c.source}'`;
  if (msg.offset > stored.offset) {
    throw new GapError(
      `${c.who}: ${stream} no longer holds offset ${stored.offset}, the last this ${c.noun} consumed ` +
        `(the first retained is ${msg.offset}): retention removed changes this ${c.noun} may not have ${c.did}; ${c.fix}${c.retentionHint ?? ''}`,
    );
  }
  if (msg.offset === stored.offset) {
    const lsn = msg.lsn ?? decodeTxn(msg.body).lsn; // the header, when there: no need to parse the body
    if (compareLsn(lsn, stored.lsn) > 0) {
      throw new GapError(
        `${c.who}: ${stream} holds transaction ${lsn} at offset ${stored.offset}, where this ${c.noun} consumed one at or before ${stored.lsn}: ` +
          `the stream was deleted and re-created, so what it held is gone; ${c.fix}`,
      );
    }
  }
}
