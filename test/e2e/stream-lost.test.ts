import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GapError, subscribe, Subscription } from '../../src/index';
import { streamName } from '../../src/names';
import type { Proc } from '../helpers/procs';
import { cli, contentOf, createWorld, deleteStream, RABBIT_URL, startUp, upArgs, waitForEqual, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';

/**
 * Issue 26 item 4: the change stream deleted in RabbitMQ (an operator's
 * `rabbitmqctl delete_queue`, a broker re-created without its volume) while
 * capture runs. Capture declares a new stream and goes on; what the old one
 * held and a consumer had not read yet is gone. Every replica and subscriber
 * whose position refers to the old stream must notice — replica state
 * `needs_resync`, a subscriber stopped — naming the deleted stream and the
 * fix, and never apply the new stream's changes as if they followed its
 * position. After `replica resync` the replica equals the source again.
 */
const SCHEMA = `CREATE TABLE events (id int PRIMARY KEY, payload text)`;

describe('the change stream deleted and re-created', () => {
  let w: World;
  let up: Proc;
  let appUrl: string;
  let sub: Subscription;
  const got: number[] = [];

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a', 'b'], schema: SCHEMA });
    appUrl = await w.replicas.createDatabase('appdb');
    up = await startUp(w, upArgs(w));
  });

  afterAll(async () => {
    await sub?.stop();
    await up?.stop();
    await w?.teardown();
  });

  const sql = (text: string, params: unknown[] = []) => w.source.withClient('app', (c) => c.query(text, params));
  const status = async (name: string) => {
    const r = await cli(w, ['replica', 'status', name, '--json']);
    return { code: r.code, v: JSON.parse(r.stdout) };
  };
  const insert = async (from: number, to: number, payload: string) => {
    for (let i = from; i <= to; i++) await sql('INSERT INTO events VALUES ($1, $2)', [i, payload]);
  };
  /** Wait for needs_resync; while waiting, the error says what the replica shows instead. */
  const needsResync = (name: string) =>
    waitFor(
      `replica '${name}' to need a resync`,
      async () => {
        const s = await status(name);
        if (s.v.state === 'needs_resync') return s;
        const rows = (await contentOf(w.replicas, `replica_${name}`, ['events'])).events.length;
        const src = (await contentOf(w.source, 'app', ['events'])).events.length;
        throw new Error(`replica '${name}' is ${s.v.state}, caughtUp ${s.v.caughtUp}, lsn ${s.v.lsn}, offset ${s.v.offset}; it holds ${rows} rows, the source ${src}`);
      },
      120_000,
      500,
    );

  it('replicas stop in needs_resync and a subscriber stops, naming the deleted stream and the fix; capture says it made the stream anew', async () => {
    sub = subscribe({
      name: 'watcher',
      source: w.sourceName,
      from: 'beginning',
      rabbitmqUrl: RABBIT_URL,
      position: { url: appUrl },
      handler: (txn) => {
        for (const c of txn.changes) got.push(Number(c.key?.id));
      },
    });
    const ended = sub.done.then(() => null, (e: unknown) => e);
    await sub.ready;
    await insert(1, 20, 'before');
    await waitForEqual(w, 'a', ['events']);
    await waitForEqual(w, 'b', ['events']);
    await waitFor('the subscriber to get rows 1–20', () => got.length >= 20);

    // b falls behind: what it has not applied when the stream goes is gone with it.
    expect((await cli(w, ['replica', 'pause', 'b'])).code).toBe(0);
    await waitFor('b to be paused', async () => (await status('b')).v.state === 'paused');
    await insert(21, 30, 'only in the old stream for b');
    await waitForEqual(w, 'a', ['events']);

    await deleteStream(w.sourceName); // channel.deleteQueue, as `rabbitmqctl delete_queue` does
    expect((await cli(w, ['replica', 'resume', 'b'])).code).toBe(0);
    await insert(31, 40, 'after the stream was deleted');

    for (const name of ['a', 'b']) {
      const stopped = await needsResync(name);
      expect(stopped.code).toBe(1);
      expect(stopped.v.lastError).toMatch(
        new RegExp(
          `^replica '${name}': the change stream ${streamName(w.sourceName).replace(/\./g, '\\.')} of source '${w.sourceName}' was deleted and re-created .*` +
            `what the old stream held after this replica's position is gone; run pgferry replica resync ${name}`,
        ),
      );
    }
    // Nothing of the new stream was applied as if it followed their positions.
    expect((await contentOf(w.replicas, 'replica_a', ['events'])).events).toHaveLength(30);
    expect((await contentOf(w.replicas, 'replica_b', ['events'])).events).toHaveLength(20);

    // Capture noticed and said so (the old stream's contents are gone for whoever had not read them).
    await waitFor('capture to report the stream made anew', () =>
      new RegExp(`change stream ${streamName(w.sourceName).replace(/\./g, '\\.')} .*(was missing|did not exist).* created anew`).test(up.output()),
    120_000);

    // The subscriber stops by itself with a GapError saying the same, and what to do.
    const err = await Promise.race([
      ended,
      waitFor('the subscriber to stop', () => false, 120_000).catch(() => new Error(`still running; it got ${got.length} rows: ${got.join(',')}`)),
    ]);
    expect(err).toBeInstanceOf(GapError);
    expect((err as Error).message).toMatch(
      new RegExp(`^subscriber 'watcher': the change stream ${streamName(w.sourceName).replace(/\./g, '\\.')} of source '${w.sourceName}' was deleted and re-created .*delete the subscriber's row`),
    );
    expect(got).toEqual(Array.from({ length: 30 }, (_, i) => i + 1)); // what it read of the old stream, nothing of the new
  });

  it('replica resync rebuilds each replica from a snapshot, and it follows the new stream', async () => {
    for (const name of ['a', 'b']) {
      const r = await cli(w, ['replica', 'resync', name, '--source', w.sourceUrl, '--replica', `${name}=${w.replicaUrls[name]}`]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
    }
    await insert(41, 45, 'after the resync');
    await waitForEqual(w, 'a', ['events']);
    await waitForEqual(w, 'b', ['events']);
    for (const name of ['a', 'b']) expect((await status(name)).v.state).toBe('running');
    expect((await contentOf(w.replicas, 'replica_a', ['events'])).events).toHaveLength(45);
  });
});
