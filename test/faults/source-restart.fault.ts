import { afterAll, beforeAll, describe, it } from 'vitest';
import { FaultWorld } from './harness/system';

/** Fault 7: the source restarted, fast and immediate, while the workload writes (it reconnects and goes on). */
describe('fault 7: source restart', () => {
  let f: FaultWorld;

  beforeAll(async () => {
    f = await FaultWorld.create();
    await f.start();
  });

  afterAll(async () => {
    await f?.teardown();
  });

  for (const mode of ['fast', 'immediate'] as const) {
    it(`pg_ctl -m ${mode}: nothing lost or duplicated`, async () => {
      const load = f.load(2, { reconnect: true });
      await f.more(load, 300);
      const t0 = Date.now();
      f.w.source.stop(mode);
      f.w.source.start();
      await f.more(load, 300, 120_000);
      await f.settle(load, { n: 7, fault: `source restarted (pg_ctl -m ${mode})`, t0 });
    });
  }
});
