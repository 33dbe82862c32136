/**
 * Subscribers as Temporal workflows, for applications that want retries,
 * pause/resume and a history in the Temporal UI, as replicas have.
 *
 *   const worker = await runSubscriberWorker({ subscribers: [{ name, source, position, handler, … }] });
 *   await worker.run;
 *
 * The application's process runs the worker (it holds the handlers) and
 * starts one `subscriberWorkflow` per subscriber (workflow id
 * pgferry-subscriber-<name>; an already-running one is re-attached). Each
 * subscriber has its own task queue, so only the process that defines it
 * runs its handler. The options are subscribe()'s; retry.maxAttempts counts
 * the activity's attempts, and a subscriber that exhausts them waits in state
 * `failed` until it is sent `resume` (pgferry subscriber resume <name>, or the
 * Temporal UI).
 */
import { WorkflowIdConflictPolicy } from '@temporalio/client';
import { Worker } from '@temporalio/worker';
import { createSubscriberActivities, SubscriberDeps } from '../../activities/subscriber';
import { subscriberWorkflow } from '../../workflows/subscriber';
import { DEFAULTS } from '../config';
import { ConfigError } from '../errors';
import { SharedRabbit } from '../changelog/rabbit';
import { subscriberTaskQueue, subscriberWorkflowId } from '../names';
import { connectClient, DEFAULT_TEMPORAL_ADDRESS, TemporalSettings } from '../temporal/connection';
import { connectWorker, runningWorkers, RunningWorkers, workflowSource } from '../temporal/worker';
import { prepareSubscriber, SubscribeOptions } from '../subscribe/subscribe';

export interface SubscriberWorkerOptions {
  subscribers: SubscribeOptions[];
  /** Default: TEMPORAL_ADDRESS, else 127.0.0.1:7233; namespace TEMPORAL_NAMESPACE, else default. */
  temporal?: Partial<TemporalSettings>;
  /** The RabbitMQ every subscriber of this worker reads from (default PGFERRY_RABBITMQ_URL, else amqp://guest:guest@127.0.0.1:5672). */
  rabbitmqUrl?: string;
  /** Size of one delivery batch (one activity): at most maxTxns transactions, or maxWaitMs. */
  batch?: { maxTxns?: number; maxWaitMs?: number };
}

/** `run` settles when the worker stops (after shutdown(), or on a fatal worker error). */
export type RunningSubscriberWorker = RunningWorkers;

export async function runSubscriberWorker(o: SubscriberWorkerOptions): Promise<RunningSubscriberWorker> {
  const names = o.subscribers.map((s) => s.name);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) throw new ConfigError(`runSubscriberWorker: subscriber '${dup}' is defined twice; give each a name of its own`);
  const temporal: TemporalSettings = {
    address: o.temporal?.address ?? process.env.TEMPORAL_ADDRESS ?? DEFAULT_TEMPORAL_ADDRESS,
    namespace: o.temporal?.namespace ?? process.env.TEMPORAL_NAMESPACE ?? 'default',
    ...(o.temporal?.tls ? { tls: o.temporal.tls } : {}),
  } as TemporalSettings;
  const deps: SubscriberDeps = {
    subscribers: new Map(),
    rabbit: new SharedRabbit(o.rabbitmqUrl ?? process.env.PGFERRY_RABBITMQ_URL ?? DEFAULTS.rabbitmqUrl),
    batch: { maxTxns: o.batch?.maxTxns ?? 1000, maxWaitMs: o.batch?.maxWaitMs ?? 5000 },
  };
  for (const s of o.subscribers) {
    const prepared = prepareSubscriber({ ...s, rabbitmqUrl: s.rabbitmqUrl ?? o.rabbitmqUrl });
    deps.subscribers.set(s.name, { prepared, from: s.from, maxAttempts: prepared.base.retry.maxAttempts });
  }
  const closeAll = async () => {
    await deps.rabbit.close();
    for (const { prepared } of deps.subscribers.values()) await prepared.close();
  };

  const connection = await connectWorker(temporal, 'start it or set TEMPORAL_ADDRESS').catch(async (err) => {
    await closeAll();
    throw err;
  });
  const activities = createSubscriberActivities(deps);
  const workers: Worker[] = [];
  const client = await connectClient(temporal).catch(async (err) => {
    await connection.close().catch(() => undefined);
    await closeAll();
    throw err;
  });
  try {
    for (const s of o.subscribers) {
      workers.push(await Worker.create({ connection, namespace: temporal.namespace, taskQueue: subscriberTaskQueue(s.name), activities, ...workflowSource() }));
    }
    for (const s of o.subscribers) {
      const { retry } = deps.subscribers.get(s.name)!.prepared.base;
      await client.workflow.start(subscriberWorkflow, {
        workflowId: subscriberWorkflowId(s.name),
        taskQueue: subscriberTaskQueue(s.name),
        args: [{ subscriber: s.name, source: s.source, retry: { initialDelayMs: retry.initialDelayMs, maxDelayMs: retry.maxDelayMs } }],
        workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
      });
    }
  } catch (err) {
    await client.connection.close().catch(() => undefined);
    await connection.close().catch(() => undefined);
    await closeAll();
    throw err;
  }
  await client.connection.close().catch(() => undefined);
  return runningWorkers(workers, async () => {
    await closeAll();
    await connection.close().catch(() => undefined);
  });
}
