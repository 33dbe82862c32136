import type { ChannelModel } from 'amqplib';
import type { Config } from '../config';
import { requireSourceUrl } from '../config';
import { gapMarker } from '../log/envelope';
import { withClient } from '../pg';
import { triggerHistory, walHistory } from './history';
import { logger } from '../logger';
import { declareStream, retainedRange, StreamPublisher } from '../log/stream';
import { slotName } from '../names';
import { withRetry } from '../retry';
import { PreparedSource, prepareSource } from './source';
import { prepareTriggerSource } from './trigger-source';

/**
 * Everything capture needs before it runs, for `init`, `up`, `replica add`
 * and `resync`: the change stream, and the publication and slot (WAL mode)
 * or the change-log schema and triggers (trigger mode).
 *
 * A slot created while the stream already holds changes means the old slot
 * was lost (dropped, or invalidated and dropped) and the changes made in
 * between are not in the log. That is never papered over: a gap marker is
 * published first, and every replica that reaches it stops in state
 * `needs_resync`.
 */
/** The history the source's positions belong to now (see capture/history.ts). */
export async function sourceHistory(config: Config, url: string): Promise<string> {
  const what = `source '${config.source.name}'`;
  if (config.source.mode !== 'trigger') return walHistory(what, url);
  return withClient(what, url, async (c) => {
    const r = (await c.query('SELECT incarnation FROM pgferry.capture_state WHERE source = $1', [config.source.name])).rows[0];
    return triggerHistory(r.incarnation);
  });
}

export async function prepareCapture(config: Config, rabbit: ChannelModel): Promise<PreparedSource & { gapMarked: boolean }> {
  const source = config.source.name;
  await declareStream(rabbit, source, config.stream);
  const url = requireSourceUrl(config);
  const prepare = config.source.mode === 'trigger' ? prepareTriggerSource : prepareSource;
  const prepared = await withRetry(() => prepare(url, source, config.source), config.connectWaitMs, logger);
  let gapMarked = false;
  if (prepared.slotCreated && prepared.slotLsn && (await retainedRange(rabbit, source)).last) {
    const lost =
      config.source.mode === 'trigger'
        ? `the trigger capture state of source '${source}' was lost (schema pgferry removed?) and installed anew at ${prepared.slotLsn}`
        : `the replication slot ${slotName(source)} of source '${source}' was lost and created anew at ${prepared.slotLsn}`;
    const reason = `${lost}: changes made in between are not in the log`;
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
