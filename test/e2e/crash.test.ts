import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as amqp from 'amqplib';
import type { Proc } from '../helpers/procs';
import { createWorld, progressOf, RABBIT_URL, startUp, upArgs, waitForEqual, World } from '../helpers/fixture';
import { audit, AUDIT_SCHEMA, AUDIT_TABLES, Workload } from '../helpers/workload';
import { waitFor } from '../helpers/wait';
import { retainedRange, StreamReader } from '../../src/changelog/stream';
import { decodeTxn } from '../../src/changelog/envelope';
import { compareLsn } from '../../src/lsn';

/**
 * kill -9 in the middle of a stream of writes: of the whole process (capture
 * and apply), then of the capture worker alone. Afterwards the replicas equal
 * the source and the audit shows no transaction lost or applied twice; the
 * slot's confirmed position never passes what RabbitMQ confirmed.
 */
describe('crash recovery (kill -9)', () => {
  let w: World;
  const procs: Proc[] = [];

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a', 'b'], schema: AUDIT_SCHEMA });
  });

  afterAll(async () => {
    for (const p of procs) await p.stop();
    await w?.teardown();
  });

  async function expectAuditClean(): Promise<number> {
    const src = await w.source.withClient('app', audit);
    for (const r of ['a', 'b']) {
      const dst = await w.replicas.withClient(`replica_${r}`, audit);
      expect(dst, `audit of replica ${r}`).toEqual({ rows: src.rows, distinct: src.rows });
    }
    expect(src.distinct).toBe(src.rows);
    return src.rows;
  }

  it('kill -9 of the process running the worker loses and doubles nothing', async () => {
    const first = await startUp(w);
    procs.push(first);
    const load = new Workload(w.sourceUrl);
    load.start();
    await waitFor('replica a to apply some of the workload', async () => Number((await progressOf(w, 'a'))?.txns_applied ?? 0) > 300, 60_000);
    await first.kill9();
    const committedAtKill = load.committed;
    await waitFor('more writes while pgferry is down', () => load.committed > committedAtKill + 200, 30_000);
    const second = await startUp(w);
    procs.push(second);
    await waitFor('writes after the restart', () => load.committed > committedAtKill + 600, 60_000);
    const total = await load.stop();
    await Promise.all([waitForEqual(w, 'a', AUDIT_TABLES, 180_000), waitForEqual(w, 'b', AUDIT_TABLES, 180_000)]);
    expect(await expectAuditClean()).toBe(total);
    console.log(`kill -9 of up: ${total} source transactions, killed after ${committedAtKill}; both replicas equal, audit clean`);
    await second.stop();
  });

  it('kill -9 of the capture worker alone: nothing lost or doubled, slot never ahead of RabbitMQ', async () => {
    // Apply runs in `up`; capture runs in its own worker process, which we kill.
    const applyProc = await startUp(w, upArgs(w, ['--queues', 'apply']));
    procs.push(applyProc);
    const captureArgs = ['worker', '--queues', 'capture', '--source', w.sourceUrl];
    let capture = await startUp(w, captureArgs);
    procs.push(capture);

    // Each sample: the slot's confirmed position, THEN the newest stream offset RabbitMQ has committed.
    // Capture confirms the slot only after RabbitMQ confirmed what precedes it, so every transaction
    // ending at or before a sampled position must already be in the stream at that moment.
    const slotSamples: { slot: string; tail: number }[] = [];
    let sampling = true;
    const initial = await slotPosition();
    const tailConn = await amqp.connect(RABBIT_URL);
    const sampler = (async () => {
      while (sampling) {
        const slot = await slotPosition();
        const tail = (await retainedRange(tailConn, w.sourceName)).last?.offset ?? -1;
        slotSamples.push({ slot, tail });
        await new Promise((r) => setTimeout(r, 100));
      }
    })();

    const load = new Workload(w.sourceUrl);
    const base = (await w.source.withClient('app', audit)).rows;
    load.start();
    await waitFor('capture to confirm part of the workload', async () => compareLsn(await slotPosition(), initial) > 0 && load.committed > 300, 60_000);
    await capture.kill9();
    const atKill = load.committed;
    await waitFor('writes while capture is down', () => load.committed > atKill + 200, 30_000);
    capture = await startUp(w, captureArgs);
    procs.push(capture);
    await waitFor('writes after capture restarted', () => load.committed > atKill + 600, 60_000);
    const total = await load.stop();
    await Promise.all([waitForEqual(w, 'a', AUDIT_TABLES, 180_000), waitForEqual(w, 'b', AUDIT_TABLES, 180_000)]);
    // The restarted capture moves the slot on too (a condition with a deadline, not a count of samples:
    // under load the new capture may wait for the killed one's walsender to let go of the slot).
    const atKillSlot = slotSamples.filter((s) => s.slot !== initial)[0]?.slot ?? initial;
    await waitFor('the restarted capture to move the slot past where the killed one left it', async () => compareLsn(await slotPosition(), atKillSlot) > 0, 120_000, 200);
    await new Promise((r) => setTimeout(r, 300)); // one more sample at the final position
    sampling = false;
    await sampler;
    expect(await expectAuditClean()).toBe(base + total);

    await tailConn.close();
    const ends = await confirmedEnds();
    const moved = slotSamples.filter((s) => s.slot !== initial);
    expect(new Set(moved.map((s) => s.slot)).size).toBeGreaterThan(1);
    let atEnds = 0;
    for (const s of moved) {
      // Never ahead of RabbitMQ: no transaction ending at or before the slot position was still unpublished.
      const unpublished = ends.filter((e) => compareLsn(e.endLsn, s.slot) <= 0 && e.offset > s.tail);
      expect(unpublished, `slot at ${s.slot} while the stream ended at offset ${s.tail}`).toEqual([]);
      if (ends.some((e) => e.endLsn === s.slot)) atEnds += 1;
      // The slot is confirmed to a transaction's end, or (a keepalive with nothing in flight) to a position
      // between transactions: never into the commit record of one. (How many samples land exactly on an
      // end depends on timing: when capture keeps up, keepalives move the slot between transactions.)
      // A keepalive may carry exactly a commit record's start (decoded up to it, the record not yet read):
      // that is before the transaction, which the slot then still sends; inside means strictly after it.
      const inside = ends.filter((e) => compareLsn(e.lsn, s.slot) < 0 && compareLsn(s.slot, e.endLsn) < 0);
      expect(inside, `slot at ${s.slot} inside a commit record`).toEqual([]);
    }
    console.log(`kill -9 of capture: ${total} transactions; ${moved.length} slot samples (${atEnds} at transaction ends), none ahead of RabbitMQ`);
  });

  async function slotPosition(): Promise<string> {
    return w.source.withClient('app', async (c) => (await c.query(`SELECT confirmed_flush_lsn::text AS p FROM pg_replication_slots WHERE slot_name = $1`, [`pgferry_${w.sourceName}`])).rows[0].p);
  }

  async function confirmedEnds(): Promise<{ lsn: string; endLsn: string; offset: number }[]> {
    const conn = await amqp.connect(RABBIT_URL);
    const reader = await StreamReader.open(conn, w.sourceName, 'first');
    const ends: { lsn: string; endLsn: string; offset: number }[] = [];
    try {
      for (;;) {
        const m = await reader.next(3000);
        if (!m) break;
        const t = decodeTxn(m.body);
        if (t.last) ends.push({ lsn: t.lsn, endLsn: t.endLsn, offset: m.offset });
      }
    } finally {
      await reader.close();
      await conn.close();
    }
    return ends;
  }
});
