/**
 * `pgferry status`: the whole system on one screen, for the person paged at
 * 3 a.m. Per source: capture state, slot position, WAL the slot holds back
 * (with a warning above the configured threshold) and the retained stream
 * range. Per replica: state, applied position, lag, rows/s, last error. Per
 * subscriber workflow: the same, when there are any.
 * Exit code 1 when any replica, subscriber (or the capture) is failed or needs
 * a resync, or a subscriber's worker does not answer.
 */
import type { Command } from 'commander';
import type { Client } from '@temporalio/client';
import { Config, loadConfig } from '../config';
import type { SlotHealth } from '../capture/wal/slot-health';
import { captureMode } from '../capture/mode';
import { ConfigError, describeCause, PgferryError } from '../errors';
import { connectRabbit } from '../changelog/rabbit';
import { retainedRange, StreamEnd } from '../changelog/stream';
import { connectClient } from '../temporal/connection';
import { CaptureView, captureView, listReplicaNames, listSubscriberNames, replicaView, ReplicaView, subscriberView, SubscriberView } from '../temporal/inspect';
import { renderSubscribers, subscriberStopped } from './subscriber';
import { CliFailure, EXIT, printJson, table } from './output';
import { action } from './command';

export interface SourceStatus {
  source: string;
  state: string;
  confirmedLsn: string | null;
  lastCommitTime: string | null;
  txns: number;
  error: string | null;
  /** The replication slot, read on the source; null in trigger mode or without the source URL. */
  slot: (SlotHealth & { warning: string | null }) | { error: string } | null;
  stream: { first: StreamEnd | null; last: StreamEnd | null } | { error: string };
}

export interface StatusReport {
  /** False when any replica or capture is failed or needs a resync (the exit code is then 1). */
  ok: boolean;
  at: string;
  sources: SourceStatus[];
  replicas: (ReplicaView & { rowsPerSecond: number | null })[];
  /** Application subscribers running as Temporal workflows on this source (or whose worker does not answer, so whose source is unknown). */
  subscribers: SubscriberView[];
  warnings: string[];
}

const BAD_STATES = ['failed', 'needs_resync'];

export async function collectStatus(config: Config, client: Client): Promise<StatusReport> {
  const source = config.source.name;
  const warnings: string[] = [];
  let capture: CaptureView | null = null;
  let captureError: string | null = null;
  try {
    capture = await captureView(client, source);
  } catch (err) {
    captureError = err instanceof PgferryError ? err.message : describeCause(err);
  }
  const [slot, stream] = await Promise.all([slotOf(config), streamRange(config)]);
  if (slot && 'warning' in slot && slot.warning) warnings.push(slot.warning);
  const sources: SourceStatus[] = [
    {
      source,
      state: capture?.state ?? 'not running',
      confirmedLsn: capture?.confirmedLsn ?? null,
      lastCommitTime: capture?.lastCommitTime ?? null,
      txns: (capture?.txns ?? 0) + (capture?.live?.txns ?? 0),
      error: capture?.lastError ?? (capture?.retrying ? `retrying: ${capture.retrying}` : null) ?? captureError,
      slot,
      stream,
    },
  ];
  const replicas: StatusReport['replicas'] = [];
  // Running replicas, and configured ones whose workflow ended (shown as stopped).
  const running = await listReplicaNames(client);
  for (const name of [...new Set([...running, ...config.replicas.map((r) => r.name)])].sort()) {
    const v = await replicaView(client, name, capture).catch((err) => {
      if (err instanceof ConfigError && !running.includes(name)) return null; // configured, never started
      throw err;
    });
    if (v) replicas.push({ ...v, rowsPerSecond: (v as { rowsPerSecond?: number }).rowsPerSecond ?? null });
  }
  const subscribers: SubscriberView[] = [];
  for (const name of await listSubscriberNames(client)) {
    const v = await subscriberView(client, name, capture).catch(() => null); // ended meanwhile
    if (v && (v.source === source || v.source === null)) subscribers.push(v);
  }
  for (const r of replicas) if (BAD_STATES.includes(r.state) || r.state === 'stopped') warnings.push(`replica '${r.replica}' is ${r.state}: ${r.lastError ?? ''}`.trim());
  for (const v of subscribers) if (subscriberStopped(v)) warnings.push(`subscriber '${v.subscriber}' is ${v.state}: ${v.lastError ?? ''}`.trim());
  const ok = !replicas.some((r) => BAD_STATES.includes(r.state)) && !BAD_STATES.includes(sources[0].state) && !subscribers.some(subscriberStopped);
  return { ok, at: new Date().toISOString(), sources, replicas, subscribers, warnings };
}

async function slotOf(config: Config): Promise<SourceStatus['slot']> {
  const slotHealth = captureMode(config).slotHealth;
  if (!slotHealth || !config.source.url) return null;
  try {
    const h = await slotHealth(config.source.url, config.source.name);
    const warning =
      h.retainedBytes !== null && h.retainedBytes > config.source.slotWarnBytes
        ? `source '${config.source.name}': slot ${h.slot} holds back ${mb(h.retainedBytes)} of WAL (threshold ${mb(config.source.slotWarnBytes)}); ` +
          `is capture running and keeping up? (pgferry status shows its error; a slot nobody reads fills the source's disk)`
        : !h.exists
          ? `source '${config.source.name}': replication slot ${h.slot} does not exist; pgferry up (or init) creates it`
          : null;
    return { ...h, warning };
  } catch (err) {
    return { error: err instanceof PgferryError ? err.message : describeCause(err) };
  }
}

/** The retained part of a source's change stream, or why it could not be read (status must still print). */
export async function streamRange(config: Config): Promise<SourceStatus['stream']> {
  try {
    const conn = await connectRabbit(config.rabbitmqUrl);
    try {
      return await retainedRange(conn, config.source.name);
    } finally {
      await conn.close().catch(() => undefined);
    }
  } catch (err) {
    return { error: err instanceof PgferryError ? err.message : describeCause(err) };
  }
}

function mb(bytes: number): string {
  if (bytes >= 1024 ** 3) return `${(bytes / 1024 ** 3).toFixed(1)} GiB`;
  if (bytes >= 1024 ** 2) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
  return `${(bytes / 1024).toFixed(1)} kiB`;
}

function fmtLag(v: ReplicaView): string {
  if (v.lagBytes === null) return '?';
  if (v.lagBytes === 0) return '0';
  return `${v.lagBytes} B${v.lagSeconds !== null ? ` / ${v.lagSeconds.toFixed(1)} s` : ''}`;
}

export function renderReplicas(views: (ReplicaView & { rowsPerSecond?: number | null })[]): string {
  const rows = [['REPLICA', 'STATE', 'APPLIED', 'OFFSET', 'LAG', 'ROWS/S', 'TXNS', 'CHANGES', 'ERROR']];
  for (const v of views) {
    const error = v.lastError ?? (v.retrying ? `retrying: ${v.retrying}` : null) ?? (v.captureError ? `capture: ${v.captureError}` : '');
    const rate = v.rowsPerSecond === undefined || v.rowsPerSecond === null ? '-' : String(Math.round(v.rowsPerSecond));
    rows.push([v.replica, v.state, v.appliedLsn, v.offset === null ? '-' : String(v.offset), fmtLag(v), rate, String(v.txns), String(v.changes), error ?? '']);
  }
  return table(rows);
}

export function renderStatus(r: StatusReport): string {
  const src = [['SOURCE', 'CAPTURE', 'CONFIRMED', 'SLOT RETAINS', 'STREAM (offsets)', 'TXNS', 'ERROR']];
  for (const s of r.sources) {
    const slot = !s.slot ? '-' : 'error' in s.slot ? `? (${s.slot.error})` : s.slot.retainedBytes === null ? 'no slot' : `${mb(s.slot.retainedBytes)}${s.slot.warning ? ' !' : ''}`;
    const stream = 'error' in s.stream ? `? (${s.stream.error})` : s.stream.first ? `${s.stream.first.offset}–${s.stream.last!.offset}` : 'empty';
    src.push([s.source, s.state, s.confirmedLsn ?? '-', slot, stream, String(s.txns), s.error ?? '']);
  }
  const parts = [table(src), '', r.replicas.length ? renderReplicas(r.replicas) : 'no replicas are running (start them with pgferry up)'];
  if (r.subscribers.length) parts.push('', renderSubscribers(r.subscribers));
  if (r.warnings.length) parts.push('', ...r.warnings.map((w) => `WARNING ${w}`));
  return parts.join('\n');
}

export function addStatusCommand(program: Command): void {
  program
    .command('status')
    .description('the whole system: capture and slot (WAL retained, stream range), every replica (state, lag, rows/s, last error); exit 1 if any replica failed or needs a resync')
    .option('--json', 'machine-readable output')
    .option('--watch [seconds]', 'refresh in place every few seconds (default 2) until Ctrl-C')
    .option('--source-name <name>', 'which source of the config file (default: its only source, or main)')
    .action(
      action(async (opts: { json?: boolean; watch?: string | boolean; sourceName?: string }) => {
        const config = loadConfig({ sourceName: opts.sourceName });
        const client = await connectClient(config.temporal);
        if (opts.watch === undefined) {
          const report = await collectStatus(config, client);
          if (opts.json) printJson(report);
          else process.stdout.write(`${renderStatus(report)}\n`);
          process.exitCode = report.ok ? EXIT.ok : EXIT.failed;
          return;
        }
        const seconds = opts.watch === true ? 2 : Number(opts.watch);
        if (!(seconds > 0)) throw new CliFailure(`--watch '${opts.watch}': give a number of seconds > 0`, EXIT.usage);
        const tty = process.stdout.isTTY;
        for (;;) {
          const report = await collectStatus(config, client);
          const body = opts.json ? JSON.stringify(report) : `pgferry status — ${report.at} (every ${seconds} s, Ctrl-C to stop)\n\n${renderStatus(report)}`;
          // In place on a terminal (cursor home, clear screen); one block after another when piped.
          process.stdout.write(tty && !opts.json ? `\x1b[H\x1b[2J${body}\n` : `${body}\n`);
          await new Promise((r) => setTimeout(r, seconds * 1000));
        }
      }),
    );
}
