import * as amqp from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { declareStream, StreamPublisher, StreamReader } from '../../src/changelog/stream';
import { decodeTxns } from '../../src/changelog/envelope';
import { RunPublisher } from '../../src/changelog/runs';
import { ins, txn } from '../helpers/crafted-log';
import { deleteStream, RABBIT_URL } from '../helpers/fixture';

/**
 * Capture's end of runs against a real stream: a quiet source publishes
 * each transaction as its own message; a burst, while RabbitMQ confirms
 * earlier messages, is carried in runs within their bounds; a large
 * transaction's chunks come after the run held before them; every
 * transaction is in the stream once, in order, and its confirm callback
 * runs once its run is confirmed.
 */
describe('RunPublisher', () => {
  let conn: amqp.ChannelModel;
  const sources: string[] = [];
  beforeAll(async () => {
    conn = await amqp.connect(RABBIT_URL);
  });
  afterAll(async () => {
    for (const s of sources) await deleteStream(s).catch(() => undefined);
    await conn?.close();
  });

  const fresh = async (window: number) => {
    const source = `r${Math.random().toString(36).slice(2, 10)}`;
    sources.push(source);
    const { id } = await declareStream(conn, source, { maxBytes: 0, maxAge: '', segmentBytes: 1_000_000 });
    return { source, pub: await StreamPublisher.open(conn, source, id, window) };
  };
  /** Every message of the stream after its marker: how many transactions each holds, and their positions in order. */
  const readAll = async (source: string, want: number) => {
    const reader = await StreamReader.open(conn, source, 'first', 256);
    const sizes: number[] = [];
    const lsns: string[] = [];
    try {
      while (lsns.length < want) {
        const m = await reader.next(5000);
        if (!m) break;
        if (m.offset === 0) continue;
        const ts = decodeTxns(m.body);
        sizes.push(ts.length);
        lsns.push(...ts.map((t) => `${t.lsn}${t.last ? '' : `#${t.seq}`}`));
      }
    } finally {
      await reader.close();
    }
    return { sizes, lsns };
  };

  it('publishes each transaction alone on a quiet source', async () => {
    const { source, pub } = await fresh(16);
    const runs = new RunPublisher(pub, { txns: 100, bytes: 1 << 20 });
    const ts = [1, 2, 3].map((n) => txn(0x100 * n, [ins('a', { id: String(n), v: 'q' })]));
    for (const t of ts) {
      await runs.publish(t, () => undefined);
      await pub.flush(); // confirmed before the next commits: a quiet source
    }
    const got = await readAll(source, 3);
    expect(got.sizes).toEqual([1, 1, 1]);
    expect(got.lsns).toEqual(ts.map((t) => t.lsn));
    await pub.close();
  });

  it('forms runs once 4 messages are unconfirmed, though the publisher\'s window has room for 64 (RUN_IN_FLIGHT)', async () => {
    const { source, pub } = await fresh(64);
    const runs = new RunPublisher(pub, { txns: 256, bytes: 1 << 20 });
    const confirmed: string[] = [];
    const sent: string[] = [];
    for (let n = 1; n <= 300; n++) {
      const t = txn(0x1000 + 0x100 * n, [ins('a', { id: String(n), v: 'steady' })]);
      await runs.publish(t, () => confirmed.push(t.lsn));
      sent.push(t.lsn);
      // Each transaction's publish is sent before the next commits, as a steady source's would be;
      // RabbitMQ's confirms come a round trip later.
      await new Promise((r) => setImmediate(r));
    }
    await runs.flush();
    await pub.flush();
    const got = await readAll(source, sent.length);
    expect(got.lsns).toEqual(sent);
    expect(confirmed).toEqual(sent);
    expect(got.sizes[0]).toBe(1); // nothing unconfirmed: at once
    // With the publisher's window (64) as the run's, 162 of them went alone here; with 4, 7 did.
    const alone = got.sizes.filter((k) => k === 1).length;
    expect(alone, `message sizes: ${got.sizes.join(' ')}`).toBeLessThan(40);
    await pub.close();
  });

  it('carries a burst in runs within their bound, chunks after the run held before them, every transaction once and in order, each confirmed', async () => {
    const { source, pub } = await fresh(2);
    const runs = new RunPublisher(pub, { txns: 10, bytes: 1 << 20 });
    const confirmed: string[] = [];
    const sent: string[] = [];
    let at = 0x1000;
    for (let n = 1; n <= 200; n++) {
      at += 0x100;
      if (n === 120) {
        // A large transaction in three chunks, amid the burst.
        for (let seq = 0; seq < 3; seq++) {
          const c = txn(at, [ins('b', { id: String(seq), v: 'big' })], { seq, last: seq === 2 });
          await runs.publish(c, () => confirmed.push(`${c.lsn}#${seq}`));
          sent.push(seq === 2 ? c.lsn : `${c.lsn}#${seq}`);
        }
        continue;
      }
      const t = txn(at, [ins('a', { id: String(n), v: 'burst' })]);
      await runs.publish(t, () => confirmed.push(t.lsn));
      sent.push(t.lsn);
    }
    await runs.flush();
    await pub.flush();
    const got = await readAll(source, sent.length);
    expect(got.lsns).toEqual(sent);
    expect(Math.max(...got.sizes)).toBeLessThanOrEqual(10);
    expect(got.sizes.filter((k) => k > 1).length, `message sizes: ${got.sizes.join(' ')}`).toBeGreaterThan(5);
    expect(got.sizes.length).toBeLessThan(120);
    expect(confirmed.length).toBe(sent.length);
    await pub.close();
  });
});
