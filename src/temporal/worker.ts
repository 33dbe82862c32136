import * as fs from 'node:fs';
import * as path from 'node:path';
import { DefaultLogger, LogLevel, NativeConnection, Runtime, Worker, WorkerOptions } from '@temporalio/worker';
import { createActivities } from '../../activities';
import type { Config } from '../config';
import { UnavailableError, describeCause } from '../errors';
import { logger } from '../logger';
import { APPLY_TASK_QUEUE, CAPTURE_TASK_QUEUE, snapshotTaskQueue } from '../names';
import { WorkerResources } from './resources';
import { temporalTls } from './connection';
import { startMetricsServer } from '../metrics';

/**
 * Workers: one for the capture task queue (long-running streamChanges) and
 * one for the apply task queue (replica batches). `pgferry up` runs both in
 * its own process; `pgferry worker --queues …` runs either or both.
 */
export type QueueName = 'capture' | 'apply';

let runtimeInstalled = false;

/** Route the SDK's own logs (and `log` in workflows and activities) into pgferry's structured log. */
export function installRuntimeLogger(): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  const level = (process.env.PGFERRY_TEMPORAL_LOG_LEVEL ?? 'WARN') as LogLevel;
  Runtime.install({
    logger: new DefaultLogger(level, (entry) => {
      const fields = { ...(entry.meta ?? {}), component: 'temporal' };
      const lvl = entry.level.toLowerCase() as 'trace' | 'debug' | 'info' | 'warn' | 'error';
      logger[lvl === 'trace' ? 'trace' : lvl](fields, entry.message);
    }),
  });
}

export function workflowSource(): { workflowBundle: { codePath: string } } | { workflowsPath: string } {
  // Prebuilt by `npm run build`; bundling at start-up would cost seconds.
  // dist/src/temporal → dist/workflow-bundle.js; src/temporal (TypeScript run directly, as in tests) → dist/ as built.
  for (const bundle of [path.resolve(__dirname, '../../workflow-bundle.js'), path.resolve(__dirname, '../../dist/workflow-bundle.js')]) {
    if (fs.existsSync(bundle)) return { workflowBundle: { codePath: bundle } };
  }
  return { workflowsPath: require.resolve('../../workflows') };
}

export interface RunningWorkers {
  run: Promise<void>;
  shutdown(): Promise<void>;
}

export async function startWorkers(config: Config, address: string, queues: QueueName[]): Promise<RunningWorkers> {
  const specs: { taskQueue: string; options: Partial<WorkerOptions> }[] = [];
  if (queues.includes('capture')) {
    // Capture heartbeats carry the live confirmed position that status and lag are computed from:
    // deliver them every 2 s instead of the default 80% of the heartbeat timeout.
    specs.push({ taskQueue: CAPTURE_TASK_QUEUE, options: { maxConcurrentActivityTaskExecutions: 20, maxHeartbeatThrottleInterval: '2 seconds' } });
  }
  if (queues.includes('apply')) specs.push({ taskQueue: APPLY_TASK_QUEUE, options: { maxConcurrentActivityTaskExecutions: 50 } });
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
  installRuntimeLogger();
  let connection: NativeConnection;
  try {
    connection = await NativeConnection.connect({ address, tls: temporalTls(config.temporal) });
  } catch (err) {
    throw new UnavailableError(`Temporal at ${address}: cannot connect (${describeCause(err)}); start it (pgferry up does) or fix TEMPORAL_ADDRESS`, { cause: err });
  }
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

/** Run workers together until all stop (shutdown(), or a fatal error), then release what they used. */
export function runningWorkers(workers: Worker[], release: () => Promise<void>): RunningWorkers {
  const run = Promise.all(workers.map((w) => w.run()))
    .then(() => undefined)
    .finally(release);
  return {
    run,
    async shutdown() {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await run;
    },
  };
}
