/**
 * Everything capture needs before it runs, for `init`, `up`, `replica add`
 * and `resync`: the change stream, and what the source's capture mode
 * installs (publication and slot, or change-log schema and triggers).
 *
 * Capture state created while the stream already holds changes means the old
 * state was lost (a slot dropped, or invalidated and dropped; the pgferry
 * schema removed) and the changes made in between are not in the log. That is
 * never papered over: a gap marker is published first, and every replica that
 * reaches it stops in state `needs_resync`.
 *
 * The other way round — the stream lost while capture state survived (the
 * stream deleted in RabbitMQ, a broker re-created without its data) — the
 * stream is made anew with a new identity (changelog/stream.ts), and every
 * consumer whose position is in the old one stops there (protocol.ts);
 * capture says so (streamLossWarning).
 *
 * What is found is returned as warnings, never logged here: each caller
 * prints them once, in its own output.
 */
import type { ChannelModel } from 'amqplib';
import type { Config } from '../config';
import { requireSourceUrl } from '../config';
import { gapMarker } from '../changelog/envelope';
import { logger } from '../logger';
import { streamName } from '../names';
import { declareStream, holdsChanges, retainedRange, StreamIdentity, StreamPublisher } from '../changelog/stream';
import { withRetry } from '../retry';
import type { PreparedSource } from './contract';
import { captureMode, refuseOtherMode } from './mode';
import { withClient } from '../pg';

/** The history the source's positions belong to now (see capture/history.ts). */
export async function sourceHistory(config: Config, url: string): Promise<string> {
  return captureMode(config).history(url, config.source.name);
}

/**
 * What capture says when the stream it publishes to was not there: either
 * the first start, or the stream was lost and what it held with it.
 */
export function streamLossWarning(source: string, id: string): string {
  return (
    `source '${source}': the change stream ${streamName(source)} was missing and is created anew (stream ${id}); if it held changes ` +
    `(deleted in RabbitMQ, or a broker that lost its data), they are gone: every replica and subscriber whose position is in the old stream stops there — ` +
    `replicas in state needs_resync: run pgferry replica resync <name> for each`
  );
}

export async function prepareCapture(config: Config, rabbit: ChannelModel): Promise<PreparedSource & { gapMarked: boolean; stream: StreamIdentity }> {
  const source = config.source.name;
  const mode = captureMode(config);
  const url = requireSourceUrl(config);
  await withRetry(() => withClient(`source '${source}'`, url, (c) => refuseOtherMode(c, source, mode)), config.connectWaitMs, logger);
  const stream = await declareStream(rabbit, source, config.stream);
  const prepared = await withRetry(() => mode.prepare(url, source, config.source), config.connectWaitMs, logger);
  if (stream.created && !prepared.slotCreated) {
    // Capture state from before, but no stream: it was lost.
    prepared.warnings.push(streamLossWarning(source, stream.id));
  }
  let gapMarked = false;
  if (prepared.slotCreated && prepared.slotLsn && holdsChanges(await retainedRange(rabbit, source))) {
    const reason = `${mode.describeLoss(source, prepared.slotLsn)}: changes made in between are not in the log`;
    const publisher = await StreamPublisher.open(rabbit, source, stream.id);
    try {
      const history = await sourceHistory(config, url);
      await publisher.publish(gapMarker({ source, lsn: prepared.slotLsn, reason, history }), () => undefined);
      await publisher.flush();
    } finally {
      await publisher.close();
    }
    prepared.warnings.push(`${reason}; every replica will stop in state needs_resync when it reaches that point: run pgferry replica resync <name> for each`);
    gapMarked = true;
  }
  return { ...prepared, gapMarked, stream };
}
