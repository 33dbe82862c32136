/**
 * The one place that names pgferry's objects: on the source (slot,
 * publication), in RabbitMQ (the stream), on replicas (the pgferry schema) and
 * in Temporal (workflow ids, task queues). Names of sources and replicas are
 * restricted to a safe alphabet so every derived name is a valid identifier.
 */
export const NAME_RE = /^[a-z][a-z0-9_]{0,39}$/;

export function checkName(kind: 'source' | 'replica', name: string): string | undefined {
  if (NAME_RE.test(name)) return undefined;
  return `${kind} name '${name}' is not allowed: use 1-40 characters of a-z, 0-9 and _, starting with a letter`;
}

export const slotName = (source: string) => `pgferry_${source}`;
export const publicationName = (source: string) => `pgferry_${source}`;
export const streamName = (source: string) => `pgferry.${source}.changes`;

export const TARGET_SCHEMA = 'pgferry';

export const captureWorkflowId = (source: string) => `pgferry-capture-${source}`;
export const replicaWorkflowId = (replica: string) => `pgferry-replica-${replica}`;
/** The snapshot copy of `replica add`, on a task queue served only by that command's own process (it knows the replica's URL). */
export const snapshotWorkflowId = (replica: string) => `pgferry-snapshot-${replica}`;
export const snapshotTaskQueue = (replica: string) => `pgferry-snapshot-${replica}`;

/** Capture and apply run on separate task queues, so they can be scaled and restarted apart. */
export const CAPTURE_TASK_QUEUE = 'pgferry-capture';
export const APPLY_TASK_QUEUE = 'pgferry-apply';

/** An application subscriber run under Temporal: its workflow, and a task queue served only by the worker holding its handler. */
export const subscriberWorkflowId = (subscriber: string) => `pgferry-subscriber-${subscriber}`;
export const subscriberTaskQueue = (subscriber: string) => `pgferry-subscriber-${subscriber}`;
