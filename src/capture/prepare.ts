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
 */
import type { ChannelModel } from 'amqplib';
import type { Config } from '../config';
import { requireSourceUrl } from '../config';
import { gapMarker } from '../changelog/envelope';
import { logger } from '../logger';
import { declareStream, retainedRange, StreamPublisher } from '../changelog/stream';
import { withRetry } from '../retry';
import type { PreparedSource } from './contract';
import { captureMode } from './mode';

/** The history the source's positions belong to now (see capture/history.ts). */
export async function sourceHistory(config: Config, url: string): Promise<string> {
  return captureMode(config).history(url, config.source.name);
}

export async function prepareCapture(config: Config, rabbit: ChannelModel): Promise<PreparedSource & { gapMarked: boolean }> {
  const source = config.source.name;
  const mode = captureMode(config);
  await declareStream(rabbit, source, config.stream);
  const url = requireSourceUrl(config);
  const prepared = await withRetry(() => mode.prepare(url, source, config.source), config.connectWaitMs, logger);
  let gapMarked = false;
  if (prepared.slotCreated && prepared.slotLsn && (await retainedRange(rabbit, source)).last) {
    const reason = `${mode.describeLoss(source, prepared.slotLsn)}: changes made in between are not in the log`;
    const publisher = await StreamPublisher.open(rabbit, source);
    try {
      const history = await sourceHistory(config, url);
      await publisher.publish(gapMarker({ source, lsn: prepared.slotLsn, reason, history }), () => undefined);
      await publisher.flush();
    } finally {
      await publisher.close();
    }
    logger.warn({ source }, reason);
    prepared.warnings.push(`${reason}; every replica will stop in state needs_resync when it reaches that point: run pgferry replica resync <name> for each`);
    gapMarked = true;
  }
  return { ...prepared, gapMarked };
}
