import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readStream, repeatedDeliveries } from './harness/inspect';
import { FaultWorld } from './harness/system';
import { startLoad, stopLoads } from './harness/workload';

/**
 * Fault 16: a clean shutdown (SIGTERM, as Ctrl-C or `systemctl stop` sends)
 * of every pgferry process, capture and apply, while the workload writes,
 * then a restart. Besides the audit of the replicas (nothing lost or applied
 * twice), nothing may be delivered twice at all: a capture that stops
 * cleanly waits for its outstanding confirms and acknowledges the slot up to
 * them, so the restarted one publishes no transaction the stream already
 * holds. The stream (this world's own) is read whole and every transaction
 * (commit LSN, chunk) must appear in it once.
 */
describe('fault 16: clean shutdown and restart of everything', () => {
  let f: FaultWorld;

  beforeAll(async () => {
    f = await FaultWorld.create();
    await f.start();
  });

  afterEach(stopLoads);

  afterAll(async () => {
    await f?.teardown();
  });

  it('fault 16: SIGTERM of capture and apply under load, restart: no duplicate delivery in the stream, nothing lost or duplicated', async () => {
    const load = startLoad(f);
    await f.more(load, 400);
    const rounds = 2;
    let t0 = 0;
    for (let round = 1; round <= rounds; round++) {
      t0 = Date.now();
      const [captureCode, applyCode] = await Promise.all([f.capture!.stop(), f.apply!.stop()]);
      // A clean stop: exit code 0, not the SIGKILL stop() sends after 20 s.
      expect({ captureCode, applyCode }, `exit codes of the clean stop (round ${round})`).toEqual({ captureCode: 0, applyCode: 0 });
      await f.more(load, 200); // writes while pgferry is down
      await f.start();
      await f.more(load, 400, 180_000);
    }
    const row = await f.settle(load, { n: 16, fault: `clean shutdown (SIGTERM) and restart of capture and apply, ${rounds} times under load`, t0 });
    const stream = await readStream(f.w);
    const repeats = repeatedDeliveries(stream);
    const txns = new Set(stream.map((e) => e.lsn)).size;
    console.log(
      `fault 16: ${row.transactions} source transactions; the stream holds ${stream.length} messages of ${txns} transactions, ` +
        `${repeats.length} delivered more than once${repeats.length ? `: ${JSON.stringify(repeats.slice(0, 5))}` : ''}; ` +
        `lost ${row.lost}, duplicated ${row.duplicated}; converged ${row.convergedSeconds}s after the last restart began`,
    );
    expect(stream.filter((e) => e.last).length, 'transactions in the stream').toBeGreaterThanOrEqual(row.transactions ?? 0);
    expect(repeats, 'transactions delivered twice to the stream across clean restarts').toEqual([]);
  });
});
