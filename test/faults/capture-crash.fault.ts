import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { crashedAt, crashEnv } from './harness/faults';
import { readStream, repeatedDeliveries } from './harness/inspect';
import { FaultWorld } from './harness/system';
import { startLoad, stopLoads } from './harness/workload';

/**
 * Faults 1 and 2: kill -9 of the capture worker at an exact point of the
 * publish → confirm → slot-acknowledgement path, with the test-only crash
 * points of src/testing/crash-point.ts (the worker SIGKILLs itself there).
 * The worker is started armed, the workload runs until it dies, a worker
 * without the crash point takes over (Temporal retries the capture activity
 * after its heartbeat timeout) and the workload goes on; then the audit.
 *
 * 1. `capture-before-confirm`: a message was handed to RabbitMQ, its confirm
 *    not yet seen. The slot was never acknowledged past it: everything not
 *    confirmed comes again from the slot (maybe a second time in the stream).
 * 2. `capture-after-confirm`: RabbitMQ confirmed a transaction, the slot was
 *    not acknowledged for it: the restarted capture publishes it again, so the
 *    stream certainly holds it twice, and the replicas must apply it once.
 */
describe('faults 1-2: kill -9 of the capture worker around publisher confirms', () => {
  let f: FaultWorld;

  beforeAll(async () => {
    f = await FaultWorld.create();
    await f.startApply(); // up prepares the source and starts the workflows; capture is started armed by each test
  });

  afterEach(stopLoads);

  afterAll(async () => {
    await f?.teardown();
  });

  const cases = [
    { n: 1, point: 'capture-before-confirm', fault: 'kill -9 of capture after a publish, before its confirm', mustRepeat: false },
    { n: 2, point: 'capture-after-confirm', fault: 'kill -9 of capture after the confirm, before the slot ack', mustRepeat: true },
  ];

  for (const c of cases) {
    it(`fault ${c.n}: ${c.fault}: nothing lost or duplicated`, async () => {
      await f.capture?.stop();
      const repeatsBefore = repeatedDeliveries(await readStream(f.w, 1500)).length;
      // Armed for its 400th hit: well into the workload, with messages in flight around it.
      const armed = await f.startCapture(crashEnv(c.point, 400));
      const load = startLoad(f);
      await crashedAt(armed, c.point);
      const t0 = Date.now();
      const atCrash = load.committed;
      await f.more(load, 200); // writes while no capture runs
      await f.startCapture();
      await f.more(load, 400, 180_000); // and after it is back
      const row = await f.settle(load, { n: c.n, fault: c.fault, t0 });
      const repeats = repeatedDeliveries(await readStream(f.w));
      const fresh = repeats.length - repeatsBefore;
      console.log(
        `fault ${c.n} (${c.point}): crashed after ${atCrash} source transactions; ${row.transactions} in all; ` +
          `${fresh} transaction(s) delivered again to the stream by the restarted capture (e.g. ${JSON.stringify(repeats.slice(-3))}); ` +
          `replicas applied each once (lost ${row.lost}, duplicated ${row.duplicated}), converged ${row.convergedSeconds}s after the crash`,
      );
      // The confirmed but unacknowledged transaction is re-sent: the replicas' dedupe was exercised.
      if (c.mustRepeat) expect(fresh, 'transactions the restarted capture published a second time').toBeGreaterThan(0);
    });
  }
});
