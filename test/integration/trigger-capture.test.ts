import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { captureTriggers } from '../../src/capture/trigger-capture';
import { prepareTriggerSource } from '../../src/capture/trigger-source';
import { UnavailableError } from '../../src/errors';
import { logger } from '../../src/logger';
import { PgCluster } from '../helpers/pg-cluster';
import { RABBIT_URL, deleteStream } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';

/**
 * Trigger capture against a real source (wal_level=replica) and the
 * machine's RabbitMQ, called as a library: what must hold between two
 * capture sessions of one source.
 */
describe('trigger capture sessions', () => {
  let source: PgCluster;
  let url: string;
  const name = `tc${Math.random().toString(36).slice(2, 10)}`;

  beforeAll(async () => {
    source = await PgCluster.start({ wal_level: 'replica' });
    url = await source.createDatabase('app');
    await source.withClient('app', (c) => c.query('CREATE TABLE t (id int PRIMARY KEY, v text)'));
    await prepareTriggerSource(url, name, {});
  });
  afterAll(async () => {
    source?.destroy();
    await deleteStream(name).catch(() => undefined);
  });

  const run = (signal: AbortSignal, progress: { seen: number } = { seen: 0 }) =>
    captureTriggers({
      source: name,
      url,
      rabbitUrl: RABBIT_URL,
      chunkChanges: 100,
      retention: { maxBytes: 0, maxAge: '', segmentBytes: 1_000_000 },
      signal,
      onProgress: () => (progress.seen += 1),
      maxRunMs: 60_000,
      log: logger.child({ test: true }),
    });

  it('defect I: a second capture of the same source refuses to run beside the first (it would interleave chunks), and runs once the first ends', async () => {
    const first = new AbortController();
    const progress = { seen: 0 };
    const running = run(first.signal, progress);
    await waitFor('the first capture to run', () => progress.seen > 0, 30_000, 100);
    const second = new AbortController();
    const err = await run(second.signal).catch((e) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect(String(err.message)).toMatch(new RegExp(`source '${name}': another trigger capture of this source is running \\(backend pid \\d+`));
    first.abort();
    await running;
    // The lock went with the first session: a new one runs.
    const third = new AbortController();
    const p3 = { seen: 0 };
    const again = run(third.signal, p3);
    await waitFor('the next capture to run', () => p3.seen > 0, 30_000, 100);
    third.abort();
    await expect(again).resolves.toMatchObject({ txns: expect.any(Number) });
  });
});
