import { LogicalReplicationService, Pgoutput } from 'pg-logical-replication';
import type pg from 'pg';
import { AckTracker, Released, TrackedTxn } from './ack-tracker';
import { TxnAssembler } from './assembler';
import { walHistory } from './history';
import { TextPgoutputPlugin } from './pgoutput';
import { slotInfo } from './source';
import { Retention, StreamPublisher } from '../log/stream';
import { GapError, SourceError, UnavailableError, describeCause, isTransient } from '../errors';
import { formatLsn, parseLsn, ZERO_LSN } from '../lsn';
import { publicationName, slotName } from '../names';
import { connectError, connectPg, SESSION_OPTIONS } from '../pg';
import { redactText } from '../redact';
import { loadSql } from '../sql';
import type { Logger } from '../logger';
import { crashPoint } from '../testing/crash-point';

/**
 * WAL capture: stream pgoutput from the slot, group changes by source
 * transaction, publish each transaction (or its chunks) to the source's
 * stream with publisher confirms, and acknowledge the slot only with the end
 * position of transactions that RabbitMQ has confirmed — together with every
 * transaction before them. If the process dies, the slot replays everything
 * after that position; replicas skip what they already applied.
 */
export interface CaptureProgress {
  /** Slot position acknowledged: end LSN of the last fully confirmed transaction (heartbeats included), or a later keepalive position when nothing was in flight. */
  confirmedLsn: string;
  /** Commit LSN and time of the last confirmed transaction that was published (not a heartbeat). */
  lastLsn?: string;
  lastCommitTime?: string;
  txns: number;
  changes: number;
  messages: number;
  startedAt: string;
  /** Trigger mode: events waiting in the source's change log, and its size on disk. */
  logEvents?: number;
  logBytes?: number;
}

export interface CaptureOptions {
  source: string;
  url: string;
  rabbitUrl: string;
  chunkChanges: number;
  /** A chunk also ends once its values add up to about this many bytes (default: the envelope's CHUNK_BYTES). */
  chunkBytes?: number;
  /** The largest single change one message may carry (default: the envelope's MAX_MESSAGE_BYTES). */
  maxMessageBytes?: number;
  retention: Retention;
  signal: AbortSignal;
  onProgress: (p: CaptureProgress) => void;
  /** Return normally after this long (lets the workflow continue-as-new); 0 = never. */
  maxRunMs: number;
  /** WAL mode: write a heartbeat on an idle source this often, so the slot keeps moving (default 60 s). */
  heartbeatMs?: number;
  log: Logger;
}

/** Prefix of the logical messages capture writes on an idle source (see `streamChanges`). */
export const HEARTBEAT_PREFIX = 'pgferry.heartbeat';

/** Per source, the kind of heartbeat failure already warned about in this process (capture restarts every few minutes). */
const heartbeatWarned = new Map<string, string>();

export async function streamChanges(opts: CaptureOptions): Promise<CaptureProgress> {
  const { source, url, log } = opts;
  const what = `source '${source}'`;
  const catalog = await connectPg(what, url);
  let publisher: StreamPublisher | undefined;
  let beatClient: pg.Client | null = null;
  const service = new LogicalReplicationService(
    { connectionString: url, options: SESSION_OPTIONS, connectionTimeoutMillis: 10_000 } as pg.ClientConfig,
    { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } },
  );
  try {
    const slot = await slotInfo(catalog, source);
    if (!slot.exists) {
      throw new GapError(`${what}: replication slot ${slotName(source)} does not exist; changes since it was dropped are lost to pgferry: run pgferry up to recreate it and resync the replicas`);
    }
    if (slot.walStatus === 'lost') {
      throw new GapError(`${what}: replication slot ${slotName(source)} was invalidated (max_slot_wal_keep_size); the replicas need a resync`);
    }
    const history = await walHistory(what, url);
    publisher = await StreamPublisher.connect(opts.rabbitUrl, source, opts.retention);
    const pub = publisher;

    const progress: CaptureProgress = {
      confirmedLsn: slot.confirmedFlushLsn ?? ZERO_LSN,
      txns: 0,
      changes: 0,
      messages: 0,
      startedAt: new Date().toISOString(),
    };
    const typeNames = new Map<string, string>();
    const assembler = new TxnAssembler({
      source,
      chunkChanges: opts.chunkChanges,
      chunkBytes: opts.chunkBytes,
      maxMessageBytes: opts.maxMessageBytes,
      history,
      typeName: (oid, mod) => typeNames.get(`${oid}:${mod}`) ?? `oid:${oid}`,
    });
    const acks = new AckTracker(progress.confirmedLsn);
    let current: TrackedTxn | null = null;
    let fatal: Error | null = null;
    let failRun: (e: Error) => void = () => undefined;
    const failed = new Promise<never>((_, reject) => {
      failRun = (e) => {
        fatal ??= e;
        reject(fatal);
      };
    });
    failed.catch(() => undefined);

    // The lib adds 1 to what it is given; we want the server to receive exactly `lsn`.
    const sendAck = () => {
      const lsn = parseLsn(progress.confirmedLsn);
      if (lsn > 0n) void service.acknowledge(formatLsn(lsn - 1n)).catch(() => undefined);
    };

    /** Count what the tracker released and acknowledge the slot if its position moved. */
    const account = (released: Released[]) => {
      for (const t of released) {
        progress.lastLsn = t.lsn;
        progress.lastCommitTime = t.commitTime;
        progress.txns += 1;
        progress.changes += t.changes;
      }
      if (acks.position !== progress.confirmedLsn) {
        progress.confirmedLsn = acks.position;
        sendAck();
      }
    };

    // Messages the replication connection has received (counted as they are decoded, in arrival
    // order) and those the handler below has finished: equal when nothing is queued or in progress.
    let received = 0;
    let handled = 0;
    /** Changes published for the open transaction. */
    let changes = 0;
    let lastTxnAt = Date.now();

    service.on('data', async (_lsn: string, msg: Pgoutput.Message) => {
      try {
        if (fatal) return;
        if (msg.tag === 'relation') {
          for (const col of msg.columns) {
            const k = `${col.typeOid}:${col.typeMod}`;
            if (!typeNames.has(k)) {
              const r = await catalog.query(loadSql('source/column-types.sql'), [col.typeOid, col.typeMod]);
              typeNames.set(k, r.rows[0].type_name);
            }
          }
        }
        if (msg.tag === 'begin') current = acks.begin();
        const { out, commit } = assembler.push(msg);
        const txn = current!;
        for (const m of out) {
          changes += m.changes.length;
          acks.published(txn);
          progress.messages += 1;
          await pub.publish(
            m,
            () => {
              crashPoint('capture-after-confirm'); // test-only (PGFERRY_TEST_CRASH_AT): confirmed, slot not yet acknowledged
              account(acks.confirmed(txn));
            },
            () => acks.nack(),
          );
          crashPoint('capture-before-confirm'); // test-only (PGFERRY_TEST_CRASH_AT): published, its confirm not yet seen
        }
        if (commit) {
          current = null;
          lastTxnAt = Date.now();
          account(acks.commit(txn, { lsn: commit.lsn, endLsn: commit.endLsn, commitTime: commit.commitTime, changes }));
          changes = 0;
        }
      } catch (err) {
        failRun(err as Error);
      } finally {
        handled += 1;
      }
    });
    service.on('heartbeat', (lsn: string, _ts: number, shouldRespond: boolean) => {
      // A keepalive carries the position the server has decoded up to, everything before it sent
      // (transactions touching no published table are not sent at all). When all of that is handled
      // and every transaction is confirmed by RabbitMQ, the slot may move there, as PostgreSQL's own
      // subscriber does: a transaction still open on the source commits after it and is sent then.
      if (!fatal && received === handled && current === null && acks.keepalive(lsn)) {
        progress.confirmedLsn = acks.position;
        sendAck();
      } else if (shouldRespond) sendAck();
    });
    service.on('error', (err: Error) => failRun(err));

    /*
     * Idle-source heartbeat. The slot moves only when a transaction comes back through it, so a
     * source whose published tables are quiet would pin its WAL (other tables, other databases,
     * checkpoints keep writing it) until the disk fills. Every `heartbeatMs` without a transaction,
     * capture writes a transactional logical message on an ordinary connection; pgoutput sends it
     * back (we ask for `messages`) as BEGIN, MESSAGE, COMMIT, and it queues behind every earlier
     * transaction in the ack tracker, so the slot moves past it only once RabbitMQ confirmed them all.
     *
     * Decision: the heartbeat is acknowledged, not published. Published, it would be an empty
     * transaction on the stream: each replica would apply and count it, applications reading the
     * stream would see it, and replica lag would be measured to it; nothing needs it there, since a
     * replica's position only has to cover the transactions it applies.
     *
     * A source that refuses the write (a read-only standby, a missing privilege) gets one warning
     * naming the cause (per worker process and kind of failure), then capture keeps trying quietly
     * each interval; it never fails capture. Keepalive positions (above) still move the slot then.
     */
    const heartbeatMs = opts.heartbeatMs ?? 60_000;
    let beating = false;
    let stopping = false;
    const beat = async () => {
      if (beating || stopping || fatal || current !== null || Date.now() - lastTxnAt < heartbeatMs) return;
      beating = true;
      lastTxnAt = Date.now(); // the next try is one interval later, whether this one works or not
      try {
        if (!beatClient) {
          const c = await connectPg(what, url, { application_name: 'pgferry heartbeat' });
          if (stopping) {
            await c.end().catch(() => undefined);
            return;
          }
          beatClient = c;
        }
        await beatClient.query('SELECT pg_catalog.pg_logical_emit_message(true, $1::text, $2::text)', [
          HEARTBEAT_PREFIX,
          JSON.stringify({ source, at: new Date().toISOString() }),
        ]);
        if (heartbeatWarned.delete(source)) log.info(`${what}: the idle heartbeat is written again`);
      } catch (err) {
        const e = err as { code?: string; message?: string; severity?: string };
        // The server refusing the statement leaves the connection usable; anything else opens a new one next time.
        if (!e.severity || /^(08|57)/.test(e.code ?? '')) {
          const c = beatClient;
          beatClient = null;
          void c?.end().catch(() => undefined);
        }
        const kind = e.code ?? e.message ?? 'error';
        if (!stopping && heartbeatWarned.get(source) !== kind) {
          heartbeatWarned.set(source, kind);
          const fix =
            e.code === '42501'
              ? 'GRANT EXECUTE ON FUNCTION pg_catalog.pg_logical_emit_message(boolean, text, text) to the capture role'
              : e.code === '25006' || /recovery/i.test(e.message ?? '')
                ? 'capture from the primary, not a read-only standby'
                : 'check the source';
          const cause = redactText(describeCause(err), [url]);
          log.warn(
            { error: cause },
            `${what}: cannot write the idle heartbeat (${cause}); while the published tables are quiet the slot then moves only with the server's keepalives and the source may keep WAL for it: ${fix}`,
          );
        }
      } finally {
        beating = false;
      }
    };

    // `messages`: logical messages are sent too (the heartbeat above; other programs' are ignored).
    const plugin = new TextPgoutputPlugin({ protoVersion: 1, publicationNames: [publicationName(source)], messages: true });
    const parse = plugin.parse.bind(plugin);
    plugin.parse = (buf: Buffer) => {
      received += 1;
      return parse(buf);
    };
    const replication = service.subscribe(plugin, slotName(source)).then(
      () => {
        if (!opts.signal.aborted) throw new UnavailableError(`${what}: the replication connection closed; capture will reconnect`);
      },
      (err) => {
        throw classifyReplicationError(source, url, err);
      },
    );
    replication.catch(() => undefined);

    const report = setInterval(() => opts.onProgress({ ...progress }), 2000);
    const keepalive = setInterval(sendAck, 10_000);
    const heartbeat = setInterval(() => void beat(), Math.max(50, Math.min(heartbeatMs / 4, 1000)));
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        replication,
        failed,
        new Promise<void>((resolve) => {
          if (opts.signal.aborted) return resolve();
          opts.signal.addEventListener('abort', () => resolve(), { once: true });
          if (opts.maxRunMs > 0) timer = setTimeout(resolve, opts.maxRunMs);
        }),
      ]);
    } finally {
      clearInterval(report);
      clearInterval(keepalive);
      clearInterval(heartbeat);
      stopping = true;
      if (timer) clearTimeout(timer);
    }
    // Stopping: let outstanding confirms land so the slot moves as far as it may.
    const deadline = Date.now() + 5000;
    while (pub.pending > 0 && Date.now() < deadline && !fatal) await new Promise((r) => setTimeout(r, 20));
    sendAck();
    log.info({ source, confirmedLsn: progress.confirmedLsn, txns: progress.txns }, 'capture stopping');
    return { ...progress };
  } catch (err) {
    if (err instanceof Error && !(err as { permanent?: boolean }).permanent && !isTransient(err)) {
      throw new UnavailableError(`${what}: capture failed (${redactText(describeCause(err), [url])}); it will restart from the slot`, { cause: err });
    }
    throw err;
  } finally {
    await service.destroy().catch(() => undefined);
    await (beatClient as pg.Client | null)?.end().catch(() => undefined);
    await publisher?.close();
    await catalog.end().catch(() => undefined);
  }
}

function classifyReplicationError(source: string, url: string, err: unknown): Error {
  const e = err as { code?: string; message?: string };
  const what = `source '${source}'`;
  if (e?.code === '42704') {
    return new GapError(`${what}: ${e.message}; the slot is gone: run pgferry up to recreate it and resync the replicas`, { cause: err });
  }
  if (e?.code === '55000' && /invalidated|wal_status|removed/i.test(e.message ?? '')) {
    return new GapError(`${what}: ${e.message}; the slot lost WAL it needed: resync the replicas`, { cause: err });
  }
  if (e?.code === '55006') {
    return new UnavailableError(`${what}: ${e.message} (another capture still holds the slot; retrying until it lets go)`, { cause: err });
  }
  if (e?.code === '42501' || e?.code === '28000' || e?.code === '28P01') {
    return new SourceError(`${what}: ${redactText(describeCause(err), [url])}; the capture role needs the REPLICATION attribute and a pg_hba.conf entry for replication connections`, { cause: err });
  }
  if (!e?.code || isTransient(err)) return connectError(what, url, err);
  return err as Error;
}
