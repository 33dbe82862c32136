import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type * as amqp from 'amqplib';
import { StreamPublisher, StreamReader } from '../../src/changelog/stream';
import type { TxnMessage } from '../../src/change';

/**
 * The publisher's waits on RabbitMQ, against a channel stand-in (the
 * channel's own behaviour is exercised with the real server in the e2e and
 * fault tests): every wait ends when the channel closes or errors.
 */
class FakeChannel extends EventEmitter {
  full = false;
  confirms: ((err: unknown) => void)[] = [];
  publish(_ex: string, _q: string, _body: Buffer, _opts: unknown, cb: (err: unknown) => void): boolean {
    this.confirms.push(cb);
    return !this.full;
  }
  async close(): Promise<void> {}
}

const message = (lsn: string): TxnMessage => ({ v: 1, source: 's', xid: 1, lsn, endLsn: lsn, commitTime: '', seq: 0, last: true, relations: {}, changes: [] });

async function publisher(ch: FakeChannel): Promise<StreamPublisher> {
  return StreamPublisher.open({ createConfirmChannel: async () => ch } as unknown as amqp.ChannelModel, 's', 'stream-1');
}

describe('StreamPublisher waits (defect H)', () => {
  it('a publish waiting for the socket to drain ends when the channel closes', async () => {
    const ch = new FakeChannel();
    const p = await publisher(ch);
    ch.full = true;
    const publishing = p.publish(message('0/10'), () => undefined);
    setTimeout(() => ch.emit('close'), 20);
    await expect(publishing).rejects.toThrow(/RabbitMQ closed the publishing channel/);
  });

  it('a publish waiting for the socket to drain ends when the channel errors', async () => {
    const ch = new FakeChannel();
    const p = await publisher(ch);
    ch.full = true;
    const publishing = p.publish(message('0/10'), () => undefined);
    setTimeout(() => ch.emit('error', new Error('connection reset')), 20);
    await expect(publishing).rejects.toThrow(/connection reset/);
  });

  it('a message returned as unroutable (stream deleted) is not confirmed, even though its ack follows', async () => {
    const ch = new FakeChannel();
    const p = await publisher(ch);
    let confirmed = 0;
    let nacked = 0;
    await p.publish(message('0/10'), () => (confirmed += 1), () => (nacked += 1));
    ch.emit('return', { fields: { replyText: 'NO_ROUTE' }, content: Buffer.from('') });
    ch.confirms[0](null);
    expect({ confirmed, nacked }).toEqual({ confirmed: 0, nacked: 1 });
    await expect(p.flush()).rejects.toThrow(/returned a change-log message as unroutable \(NO_ROUTE\)/);
  });

  it('flush waits for confirms and ends with the failure when the channel closes meanwhile', async () => {
    const ch = new FakeChannel();
    const p = await publisher(ch);
    await p.publish(message('0/10'), () => undefined);
    const flushing = p.flush();
    setTimeout(() => ch.emit('close'), 20);
    await expect(flushing).rejects.toThrow(/closed the publishing channel/);
  });
});

describe('StreamReader memory (defect G)', () => {
  class FakeConsumerChannel extends EventEmitter {
    deliver: (msg: unknown) => void = () => undefined;
    /** Ack frames sent, and how many messages they gave back (a `multiple` ack covers all delivered up to it). */
    frames = 0;
    acks = 0;
    private delivered: unknown[] = [];
    async prefetch(): Promise<void> {}
    async consume(_q: string, cb: (msg: unknown) => void) {
      this.deliver = (m) => {
        this.delivered.push(m);
        cb(m);
      };
      return { consumerTag: 't' };
    }
    ack(m: unknown, allUpTo = false): void {
      this.frames += 1;
      const i = this.delivered.indexOf(m);
      if (i < 0) throw new Error('ack of a message not delivered or already acked');
      const n = allUpTo ? i + 1 : 1;
      this.acks += n;
      this.delivered.splice(allUpTo ? 0 : i, n);
    }
    async cancel(): Promise<void> {}
    async close(): Promise<void> {}
  }
  const msg = (offset: number, bytes: number) => ({ content: Buffer.alloc(bytes), properties: { headers: { 'x-stream-offset': offset } } });
  const open = (ch: FakeConsumerChannel, prefetch: number) => StreamReader.open({ createChannel: async () => ch } as unknown as amqp.ChannelModel, 's', 0, prefetch);

  it('holds its acks (RabbitMQ credit) while the messages it buffers exceed maxBytes, and gives them back as it drains', async () => {
    const ch = new FakeConsumerChannel();
    const r = await open(ch, 4); // acks in groups of one
    r.maxBytes = 100;
    for (let i = 0; i < 4; i++) ch.deliver(msg(i, 60)); // 240 bytes buffered
    await r.next(0); // 180 left: over the bound, no credit back
    await r.next(0); // 120 left: still over
    expect(ch.acks).toBe(0);
    await r.next(0); // 60 left: under the bound, the three held acks go
    expect(ch.acks).toBe(3);
    await r.next(0);
    expect(ch.acks).toBe(4);
    await r.close();
  });

  it('acks in groups of a quarter of its prefetch, busy or waiting, and never runs out of credit', async () => {
    const ch = new FakeConsumerChannel();
    const prefetch = 16; // groups of four
    const r = await open(ch, prefetch);
    let delivered = 0;
    // What RabbitMQ may still send: the prefetch less what it delivered and was not acked.
    const credit = () => prefetch - (delivered - ch.acks);
    const deliver = (n: number) => {
      for (let i = 0; i < n; i++) ch.deliver(msg(delivered++, 10));
    };
    deliver(10);
    for (let i = 0; i < 3; i++) await r.next(0);
    expect(ch.acks).toBe(0); // three taken, seven still to take: no frame yet
    await r.next(0);
    expect([ch.frames, ch.acks]).toEqual([1, 4]);
    for (let i = 0; i < 4; i++) await r.next(0);
    expect([ch.frames, ch.acks]).toEqual([2, 8]);
    await r.next(0);
    await r.next(0); // the last one: the buffer is empty, and the two taken since the last ack are held
    expect([ch.frames, ch.acks]).toEqual([2, 8]);
    expect(await r.next(0)).toBeNull();
    expect(credit()).toBe(prefetch - 2); // a waiting reader still has all but those two
    // A reader keeping up with a live source (one message at a time): one ack frame per four messages.
    for (let i = 0; i < 40; i++) {
      deliver(1);
      await r.next(0);
      expect(credit()).toBeGreaterThan(prefetch - 4);
    }
    expect([ch.frames, ch.acks]).toEqual([2 + 10, 48]);
    await r.close();
  });
});
