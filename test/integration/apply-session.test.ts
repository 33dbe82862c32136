import { describe, expect, it, vi } from 'vitest';
import { StreamReader } from '../../src/changelog/stream';

const realOpen = StreamReader.open.bind(StreamReader);

/** Every StreamReader opened from now on (restore with `open.mockRestore()`): a test can silence one's consumer. */
function spyReaders(): { opened: StreamReader[]; open: { mockRestore(): void } } {
  const opened: StreamReader[] = [];
  const open = vi.spyOn(StreamReader, 'open').mockImplementation(async (...args: Parameters<typeof StreamReader.open>) => {
    const r = await realOpen(...args);
    opened.push(r);
    return r;
  });
  return { opened, open };
}

/** Cancel a reader's consumer from the client side, which amqplib does not report to it: RabbitMQ's silence without a cancel. */
async function silence(reader: StreamReader): Promise<void> {
  const raw = reader as unknown as { ch: { cancel(tag: string): Promise<unknown> }; tag: string };
  await raw.ch.cancel(raw.tag);
}
import { CraftedLog, useCraftedLog, ins, txn } from '../helpers/crafted-log';
import { RejectedChangeError, UnavailableError } from '../../src/errors';
import { LogCursor, START_OF_LOG } from '../../src/changelog/cursor';
import { waitFor } from '../helpers/wait';

/**
 * Apply sessions (src/apply/apply-session.ts) against a real stream and a
 * real replica: many batches on one consumer, stopping at a batch boundary
 * when told (a pause) even with a large transaction half-arrived, and a
 * transaction left half-arrived by one batch completed by a later batch of
 * the same session, each applied once.
 */
const SCHEMA = `
  CREATE TABLE a (id bigint PRIMARY KEY, v text);
  CREATE TABLE b (id bigint PRIMARY KEY, v text);
`;

describe('apply sessions', () => {
  let log: CraftedLog;
  useCraftedLog(SCHEMA, (l) => (log = l));

  let at = 0x1000;
  const next = () => (at += 0x100);
  const count = async (t: string) => ((await log.rows(`SELECT count(*)::int AS n FROM ${t}`)) as { n: number }[])[0].n;
  const stored = async () => ((await log.rows(`SELECT lsn::text AS lsn FROM pgferry.progress WHERE replica = 'r'`)) as { lsn: string }[])[0]?.lsn;

  it('applies batch after batch on one consumer, also what is published while it runs, and checkpoints each', async () => {
    const first = Array.from({ length: 30 }, (_, i) => txn(next(), [ins('b', { id: String(i + 1), v: 'early' })]));
    await log.publish(...first);
    const commits: string[] = [];
    const running = log.session({
      maxRunMs: 4000,
      maxChanges: 5,
      onBatch: (_t, b) => {
        if (b.txns) commits.push(b.appliedLsn);
      },
    });
    await waitFor('the first 30 applied', async () => (await count('b')) === 30, 10_000, 20);
    const later = Array.from({ length: 20 }, (_, i) => txn(next(), [ins('a', { id: String(i + 1), v: 'late' })]));
    await log.publish(...later);
    const r = await running;
    expect(r.txns).toBe(50);
    expect(r.changes).toBe(50);
    expect(r.batches).toBeGreaterThanOrEqual(10); // at most 5 changes a batch
    expect(await count('a')).toBe(20);
    expect(await count('b')).toBe(30);
    expect(r.appliedLsn).toBe(later[19].lsn);
    expect(await stored()).toBe(later[19].lsn);
    expect(commits.length).toBeGreaterThanOrEqual(10);
    expect(commits[commits.length - 1]).toBe(later[19].lsn);
  });

  it('stops when told, within a second, at a batch boundary: a large transaction half-arrived is undone and applied whole later', async () => {
    const [small, big] = [next(), next()];
    await log.publish(
      txn(small, [ins('b', { id: '1', v: 'small' })]),
      txn(big, [ins('a', { id: '1', v: 'big' })], { seq: 0, last: false }),
      txn(big, [ins('a', { id: '2', v: 'big' })], { seq: 1, last: false }),
    );
    const stop = new AbortController();
    // The next chunk would be waited for 30 s: only the stop ends this batch early.
    const running = log.session({ signal: stop.signal, maxRunMs: 60_000, chunkWaitMs: 30_000 });
    await waitFor('the big transaction begun on the replica (it writes table a, uncommitted)', async () => {
      const rows = (await log.rows(
        `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'a' AND l.mode = 'RowExclusiveLock' AND l.pid <> pg_backend_pid()`,
      )) as { n: number }[];
      return rows[0].n > 0;
    }, 10_000, 20);
    const asked = Date.now();
    stop.abort();
    const r = await running;
    expect(Date.now() - asked).toBeLessThan(1500);
    expect(r.txns).toBe(1);
    expect(await count('b')).toBe(1);
    expect(await count('a')).toBe(0);
    expect(await stored()).toBe(r.appliedLsn);
    // The rest arrives; the next session reads the transaction again from its first chunk.
    await log.publish(txn(big, [ins('a', { id: '3', v: 'big' })], { seq: 2, last: true }));
    const again = await log.session({ maxRunMs: 1000 });
    expect(again.txns).toBe(1);
    expect(await count('a')).toBe(3);
    expect(await count('b')).toBe(1);
  });

  it('a transaction whose chunks stopped is left by one batch and, re-sent whole, applied once by a later batch of the same session', async () => {
    const [big, after] = [next(), next()];
    await log.publish(txn(big, [ins('a', { id: '1', v: 'cut' })], { seq: 0, last: false }));
    const running = log.session({ maxRunMs: 5000, chunkWaitMs: 400 });
    await new Promise((r) => setTimeout(r, 1000)); // past the chunk wait: that batch gave the transaction up
    await log.publish(
      txn(big, [ins('a', { id: '1', v: 'whole' })], { seq: 0, last: false }),
      txn(big, [ins('a', { id: '2', v: 'whole' })], { seq: 1, last: true }),
      txn(after, [ins('b', { id: '9', v: 'after' })]),
    );
    const r = await running;
    expect(r.txns).toBe(2);
    expect(await log.rows('SELECT id::int, v FROM a ORDER BY id')).toEqual([
      { id: 1, v: 'whole' },
      { id: 2, v: 'whole' },
    ]);
    expect(await count('b')).toBe(1);
    expect(await stored()).toBe(r.appliedLsn);
  });

  it('a transaction whose chunks stall (capture alive but held up) and then resume is applied once, whole, by the same session', async () => {
    // Review finding: the batch that gives the transaction up must make the next one read it from its
    // first chunk; a reader left past chunks 0..1 would skip the rest and then refuse what follows.
    const [big, after] = [next(), next()];
    await log.publish(txn(big, [ins('a', { id: '1', v: 'x' })], { seq: 0, last: false }), txn(big, [ins('a', { id: '2', v: 'x' })], { seq: 1, last: false }));
    const running = log.session({ maxRunMs: 5000, chunkWaitMs: 400 });
    await new Promise((r) => setTimeout(r, 1000)); // past the chunk wait: that batch gave the transaction up
    await log.publish(txn(big, [ins('a', { id: '3', v: 'x' })], { seq: 2, last: true }), txn(after, [ins('b', { id: '9', v: 'after' })]));
    const r = await running;
    expect(r.txns).toBe(2);
    expect(await count('a')).toBe(3);
    expect(await count('b')).toBe(1);
    expect(await stored()).toBe(r.appliedLsn);
  });

  it('a reader whose consumer stopped without a cancel is noticed while idle, and the session attaches again and applies what came since', async () => {
    // RabbitMQ cancels the consumers of a stream it deletes; a cancel lost (a restart, a connection's
    // churn) left a session reading nothing, "running" and never moving, until its run ended. Here the
    // consumer is cancelled from the client side, which amqplib does not report to the reader: the same
    // silence on a real broker.
    const { opened, open } = spyReaders();
    try {
      await log.publish(txn(next(), [ins('b', { id: '1', v: 'before' })]));
      const running = log.session({ maxRunMs: 30_000 });
      await waitFor('the first applied', async () => (await count('b')) === 1, 10_000, 20);
      const reader = opened.find((r) => r.lastOffset !== null)!;
      await silence(reader);
      const later = Array.from({ length: 5 }, (_, i) => txn(next(), [ins('a', { id: String(i + 1), v: 'after' })]));
      await log.publish(...later);
      await waitFor('what was published after the consumer stopped to be applied by the same session', async () => (await count('a')) === 5, 22_000, 100);
      expect(await stored()).toBe(later[4].lsn);
      await running;
    } finally {
      open.mockRestore();
    }
  });

  it('a subscriber cursor whose consumer stopped without a cancel says so, retried, instead of waiting in silence; one simply idle at the end does not', async () => {
    const { opened, open } = spyReaders();
    try {
      const first = txn(next(), [ins('b', { id: '1', v: 'x' })]);
      await log.publish(first);
      const cursor = await LogCursor.open(log.rabbit, log.source, START_OF_LOG, { consumer: "subscriber 'app'", fix: 'start it again' });
      try {
        const got = await cursor.next(5000);
        expect(got?.kind === 'chunk' && got.m.lsn).toBe(first.lsn);
        // Idle at the stream's end for longer than the check's 10 s: no error.
        const idleUntil = Date.now() + 11_500;
        while (Date.now() < idleUntil) expect(await cursor.next(500)).toBeNull();
        // Its consumer stops without a cancel; more is published: within the next check, a retried error naming it.
        const reader = opened.find((r) => r.lastOffset !== null)!;
        await silence(reader);
        await log.publish(txn(next(), [ins('b', { id: '2', v: 'y' })]));
        const failed = await (async () => {
          for (const until = Date.now() + 15_000; Date.now() < until; ) {
            try {
              if (await cursor.next(500)) return 'delivered';
            } catch (err) {
              return err as Error;
            }
          }
          return 'silent';
        })();
        expect(failed).toBeInstanceOf(UnavailableError);
        expect((failed as Error).message).toMatch(/^subscriber 'app': its reader of the change stream pgferry\.\S+\.changes delivered nothing for 10 s though the stream's newest offset is \d+, the reader was delivered \d+; reading again from its position$/);
      } finally {
        await cursor.close();
      }
    } finally {
      open.mockRestore();
    }
  });

  it('a refused change ends the session with the error, keeping every transaction before it', async () => {
    await log.reset(`${SCHEMA} ALTER TABLE b ADD CHECK (v <> 'bad');`);
    const [ok1, ok2, bad] = [next(), next(), next()];
    await log.publish(txn(ok1, [ins('b', { id: '1', v: 'ok' })]));
    const running = log.session({ maxRunMs: 10_000 });
    await waitFor('the first applied', async () => (await count('b')) === 1, 10_000, 20);
    await log.publish(txn(ok2, [ins('b', { id: '2', v: 'ok' })]), txn(bad, [ins('b', { id: '3', v: 'bad' })]));
    await expect(running).rejects.toBeInstanceOf(RejectedChangeError);
    expect(await count('b')).toBe(2);
    expect(await stored()).toBe(txn(ok2, []).lsn);
  });
});
