/**
 * The replication worker process, composed: one worker for the capture task
 * queue (long-running streamChanges) and one for the apply task queue
 * (replica batches), with the activities built over this process's config and
 * connections, and the Prometheus endpoint. `pgferry up` runs both in its own
 * process; `pgferry worker --queues …` runs either or both.
 */
import { Worker, WorkerOptions } from '@temporalio/worker';
import { createActivities } from '../../activities';
import type { Config } from '../config';
import { describeCause } from '../errors';
import { logger } from '../logger';
import { startMetricsServer } from '../metrics/scrape-server';
import { APPLY_TASK_QUEUE, CAPTURE_TASK_QUEUE, snapshotTaskQueue } from '../names';
import { WorkerResources } from '../temporal/resources';
import { connectWorker, runningWorkers, RunningWorkers, workflowSource } from '../temporal/worker';

export type QueueName = 'capture' | 'apply';

export async function startWorkers(config: Config, address: string, queues: QueueName[]): Promise<RunningWorkers> {
  const specs: { taskQueue: string; options: Partial<WorkerOptions> }[] = [];
  if (queues.includes('capture')) {
    // Capture heartbeats carry the live confirmed position that status and lag are computed from:
    // deliver them every 2 s instead of the default 80% of the heartbeat timeout.
    specs.push({ taskQueue: CAPTURE_TASK_QUEUE, options: { maxConcurrentActivityTaskExecutions: 20, maxHeartbeatThrottleInterval: '2 seconds' } });
  }
  // Apply sessions learn of a pause from the answer to a heartbeat: let their heartbeats through every 250 ms.
  if (queues.includes('apply')) specs.push({ taskQueue: APPLY_TASK_QUEUE, options: { maxConcurrentActivityTaskExecutions: 50, maxHeartbeatThrottleInterval: '250 ms' } });
  const workers = await runWorkers(config, address, specs);
  // Prometheus endpoint (config.metrics; off when the port is 0, a warning and no endpoint when it is taken).
  const metrics = await startMetricsServer(config, address, { servesCapture: queues.includes('capture') }).catch((err) => {
    logger.warn({ error: describeCause(err) }, 'metrics: cannot start the endpoint; replicating without it');
    return null;
  });
  if (!metrics) return workers;
  const run = workers.run.finally(() => metrics.close());
  return {
    run,
    async shutdown() {
      await workers.shutdown();
      await run;
    },
  };
}

/** The worker of one `replica add --snapshot` run: its own task queue, so only this process (which knows the replica) copies. */
export async function startSnapshotWorker(config: Config, address: string, replica: string): Promise<RunningWorkers> {
  return runWorkers(config, address, [{ taskQueue: snapshotTaskQueue(replica), options: { maxHeartbeatThrottleInterval: '1 second' } }]);
}

async function runWorkers(config: Config, address: string, specs: { taskQueue: string; options: Partial<WorkerOptions> }[]): Promise<RunningWorkers> {
  const connection = await connectWorker({ ...config.temporal, address }, 'start it (pgferry up does) or fix TEMPORAL_ADDRESS');
  const resources = new WorkerResources(config);
  const activities = createActivities({ config, logger, resources });
  const common = { connection, namespace: config.temporal.namespace, activities, ...workflowSource() };
  const workers: Worker[] = [];
  for (const spec of specs) workers.push(await Worker.create({ ...common, ...spec.options, taskQueue: spec.taskQueue }));
  return runningWorkers(workers, async () => {
    await resources.close();
    await connection.close().catch(() => undefined);
  });
}
