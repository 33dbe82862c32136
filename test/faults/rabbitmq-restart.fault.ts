import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/wait';
import { FaultWorld, PrivateRabbit, REPLICAS, Supervisor } from './harness/system';
import { waitForReplicasRunning } from './harness/wait';

/**
 * Fault 4: RabbitMQ restarted (stopped, then started) while the workload
 * writes. The RabbitMQ restarted is a node of the test's own (the machine's
 * RabbitMQ installation on its own ports and data directory): stopping the
 * machine's shared server would break every other test running at the same
 * time. Two ways: `rabbitmqctl stop_app` / `start_app` (the application
 * stops, the Erlang VM stays), and the whole node stopped and started again
 * (the VM exits; the stream is recovered from disk). Either way the source
 * keeps writing while RabbitMQ is down (the slot keeps what capture has not
 * had confirmed), and afterwards `pgferry status` shows both replicas running.
 */
const DOWN_MS = 10_000;

describe('fault 4: RabbitMQ restart', () => {
  let f: FaultWorld;
  let rabbit: PrivateRabbit;
  let sup: Supervisor | null = null;

  beforeAll(async () => {
    rabbit = await PrivateRabbit.start();
    f = await FaultWorld.create({ env: { PGFERRY_RABBITMQ_URL: rabbit.url } });
    await f.start();
  });

  afterAll(async () => {
    await sup?.stop();
    await f?.teardown();
    await rabbit?.destroy();
  });

  const variants = [
    { how: 'rabbitmqctl stop_app, start_app', stop: () => rabbit.stopApp(), start: () => rabbit.startApp() },
    { how: 'node stopped (rabbitmqctl stop), rabbitmq-server started again', stop: () => rabbit.stopNode(), start: () => rabbit.startNode() },
  ];

  for (const v of variants) {
    it(`${v.how}: nothing lost or duplicated, replicas running again`, async () => {
      await sup?.stop();
      sup = new Supervisor(f).start();
      const load = await f.steadyLoad();
      const t0 = Date.now();
      let downSeconds = 0;
      try {
        await v.stop();
        // RabbitMQ stays down for DOWN_MS of the workload committing (at least 300 more source transactions).
        const target = load.committed + 300;
        await waitFor(`${DOWN_MS / 1000} s and 300 source transactions with RabbitMQ down`, () => Date.now() - t0 >= DOWN_MS && load.committed >= target, 120_000, 100);
        downSeconds = (Date.now() - t0) / 1000;
      } finally {
        // Always bring it back (the other tests of this file need it, and its node must be stoppable in afterAll).
        if (!(await rabbit.answers())) await v.start();
      }
      await f.more(load, 300, 180_000);
      await f.settle(load, { n: 4, fault: `RabbitMQ restarted: ${v.how} (down ${downSeconds.toFixed(0)} s)${sup.crashes.length ? `; pgferry crashed ${sup.crashes.length}× (restarted by the test)` : ''}`, t0 });
      await sup.stop();
      expect.soft(sup.summary(), 'pgferry processes exited during the fault (a service manager would restart them; this one did)').toBe('');

      const status = await waitForReplicasRunning(f, { settled: true });
      expect(status.replicas.map((r) => [r.replica, r.state])).toEqual(REPLICAS.map((n) => [n, 'running']));
    });
  }
});
