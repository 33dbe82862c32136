/**
 * pgferry as a library: what an application imports to consume a source's
 * change log. See the README's "Feeding applications" for an example.
 *
 *   import { subscribe } from 'pgferry';
 */
export { subscribe } from './subscribe/subscribe';
export type { SubscribeOptions, Subscription, SubscriberFrom } from './subscribe/subscribe';
export { runSubscriberWorker } from './app/subscriber-worker';
export type { SubscriberWorkerOptions, RunningSubscriberWorker } from './app/subscriber-worker';
export type { ChangeEvent, TransactionEvent, Operation, ChangeFilter } from './subscribe/events';
export type { Handler, HandlerContext, RetryOptions } from './subscribe/deliver';
export type { PositionTable } from './subscribe/positions';
export type { LogPosition } from './changelog/cursor';
export type { ColumnInfo, Row, Value } from './change';
export type { SubscriberStatus } from '../workflows/messages';
export { subscriberWorkflowId } from './names';
export { pauseSignal, resumeSignal, subscriberStatusQuery } from '../workflows/messages';
export { HandlerFailedError, GapError, ConfigError, PgferryError } from './errors';
