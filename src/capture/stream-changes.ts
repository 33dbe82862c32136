import { LogicalReplicationService, Pgoutput } from 'pg-logical-replication';
import type pg from 'pg';
import { TxnAssembler } from './assembler';
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

/**
 * WAL capture: stream pgoutput from the slot, group changes by source
 * transaction, publish each transaction (or its chunks) to the source's
 * stream with publisher confirms, and acknowledge the slot only with the end
 * position of transactions that RabbitMQ has confirmed — together with every
 * transaction before them. If the process dies, the slot replays everything
 * after that position; replicas skip what they already applied.
 */
export interface CaptureProgress {
  /** Slot position acknowledged (end LSN of the last fully confirmed transaction). */
  confirmedLsn: string;
  /** Commit LSN and time of the last confirmed transaction. */
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
  retention: Retention;
  signal: AbortSignal;
  onProgress: (p: CaptureProgress) => void;
  /** Return normally after this long (lets the workflow continue-as-new); 0 = never. */
  maxRunMs: number;
  log: Logger;
}

interface PendingTxn {
  lsn: string;
  endLsn: string;
  commitTime: string;
  unconfirmed: number;
  committed: boolean;
  changes: number;
}

export async function streamChanges(opts: CaptureOptions): Promise<CaptureProgress> {
  const { source, url, log } = opts;
  const what = `source '${source}'`;
  const catalog = await connectPg(what, url);
  let publisher: StreamPublisher | undefined;
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
      typeName: (oid, mod) => typeNames.get(`${oid}:${mod}`) ?? `oid:${oid}`,
    });
    const pending: PendingTxn[] = [];
    let current: PendingTxn | null = null;
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

    const advance = () => {
      let moved = false;
      while (pending.length && pending[0].committed && pending[0].unconfirmed === 0) {
        const t = pending.shift()!;
        progress.confirmedLsn = t.endLsn;
        progress.lastLsn = t.lsn;
        progress.lastCommitTime = t.commitTime;
        progress.txns += 1;
        progress.changes += t.changes;
        moved = true;
      }
      if (moved) sendAck();
    };

    service.on('data', async (_lsn: string, msg: Pgoutput.Message) => {
      if (fatal) return;
      try {
        if (msg.tag === 'relation') {
          for (const col of msg.columns) {
            const k = `${col.typeOid}:${col.typeMod}`;
            if (!typeNames.has(k)) {
              const r = await catalog.query(loadSql('source/column-types.sql'), [col.typeOid, col.typeMod]);
              typeNames.set(k, r.rows[0].type_name);
            }
          }
        }
        if (msg.tag === 'begin') {
          current = { lsn: '', endLsn: '', commitTime: '', unconfirmed: 0, committed: false, changes: 0 };
          pending.push(current);
        }
        const { out, commit } = assembler.push(msg);
        const txn = current!;
        for (const m of out) {
          txn.changes += m.changes.length;
          txn.unconfirmed += 1;
          progress.messages += 1;
          await pub.publish(m, () => {
            txn.unconfirmed -= 1;
            advance();
          });
        }
        if (commit) {
          txn.lsn = commit.lsn;
          txn.endLsn = commit.endLsn;
          txn.commitTime = commit.commitTime;
          txn.committed = true;
          current = null;
          advance();
        }
      } catch (err) {
        failRun(err as Error);
      }
    });
    service.on('heartbeat', (_lsn: string, _ts: number, shouldRespond: boolean) => {
      if (shouldRespond) sendAck();
    });
    service.on('error', (err: Error) => failRun(err));

    const plugin = new TextPgoutputPlugin({ protoVersion: 1, publicationNames: [publicationName(source)] });
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
      if (timer) clearTimeout(timer);
    }
    // Stopping: let outstanding confirms land so the slot moves as far as it may.
    const deadline = Date.now() + 5000;
    while (pub.pending > 0 && Date.now() < deadline && !fatal) await new Promise((r) => setTimeout(r, 20));
    advance();
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
