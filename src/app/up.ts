/**
 * `pgferry up`: everything in one process. Connects to TEMPORAL_ADDRESS or
 * starts the Temporal dev server (state under the data directory), checks
 * RabbitMQ, prepares the source (publication, slot), checks each replica,
 * runs the workers in-process and starts (or re-attaches to) the capture and
 * replica workflows. Runs until interrupted.
 */
import * as path from 'node:path';
import { Client, WorkflowIdConflictPolicy } from '@temporalio/client';
import type { Config } from '../config';
import { replicaShare, requireSourceUrl } from '../config';
import { ConfigError } from '../errors';
import { logger } from '../logger';
import { withRetry } from '../retry';
import { initialize } from './init';
import { APPLY_TASK_QUEUE, CAPTURE_TASK_QUEUE, captureWorkflowId, replicaWorkflowId } from '../names';
import { connectClient, DEFAULT_TEMPORAL_ADDRESS } from '../temporal/connection';
import { DevServer, devServerOnPort, isTemporalUp, realFile, startDevServer } from '../temporal/dev-server';
import { QueueName, startWorkers } from './worker';
import { captureVisibility, ensureSearchAttributes, replicaVisibility, startVisible } from '../temporal/search-attributes';
import { captureWorkflow, replicaWorkflow } from '../../workflows';
import { resumeSignal } from '../../workflows/messages';

export interface UpOptions {
  queues: QueueName[];
  /** Where the lines for the operator go (the CLI prints them). */
  say: (line: string) => void;
  uiPort: number;
  temporalPort: number;
  /** Resolves when pgferry should stop (with the reason); default: SIGINT or SIGTERM. */
  until?: Promise<string>;
  /** Said once everything runs, instead of the default hint. */
  onRunning?: () => void;
}

/**
 * Whether a Temporal server found answering on the dev server's port may be
 * used: the dev server an earlier `up` started for this data directory, yes;
 * one serving another pgferry data directory, no (its workflows belong to
 * another setup); anything else is said and used, as TEMPORAL_ADDRESS would be.
 */
function reusable(config: Config, port: number, address: string): string {
  const found = devServerOnPort(port);
  if (!found) return 'not a dev server pgferry can identify; set TEMPORAL_ADDRESS to name it on purpose';
  const mine = realFile(path.join(config.dataDir, 'temporal.db'));
  if (found.dbFile === mine) return `the dev server started earlier for this data directory, pid ${found.pid}`;
  throw new ConfigError(
    `Temporal: the dev server answering on ${address} (pid ${found.pid}) serves another pgferry data directory (${found.dbFile ?? 'an in-memory database'}), not ${config.dataDir}: ` +
      `its workflows belong to another setup. Stop it, give this one another port (--temporal-port, --ui-port), or set TEMPORAL_ADDRESS=${address} to use it on purpose`,
  );
}

export async function up(config: Config, opts: UpOptions): Promise<void> {
  requireSourceUrl(config);
  const { say } = opts;

  // 1. Temporal
  let dev: DevServer | null = null;
  let address = config.temporal.address;
  let uiUrl: string | null = process.env.TEMPORAL_UI_URL ?? null;
  if (!address) {
    address = opts.temporalPort === 7233 ? DEFAULT_TEMPORAL_ADDRESS : `127.0.0.1:${opts.temporalPort}`;
    if (await isTemporalUp(address)) {
      say(`Temporal: using the server already running at ${address} (${reusable(config, opts.temporalPort, address)})`);
      uiUrl ??= `http://127.0.0.1:${opts.uiPort}`;
    } else {
      say(`Temporal: starting the dev server (state in ${config.dataDir}/temporal.db)…`);
      dev = await startDevServer({ dataDir: config.dataDir, port: opts.temporalPort, uiPort: opts.uiPort, log: logger });
      uiUrl = dev.uiUrl;
    }
  }
  const temporalAt = address;
  try {
    const client = await withRetry(() => connectClient(config.temporal, { address: temporalAt, hint: 'check temporal.address / TEMPORAL_ADDRESS' }), config.connectWaitMs, logger);
    try {
      await serve(config, opts, client, temporalAt, uiUrl);
    } finally {
      await client.connection.close().catch(() => undefined);
    }
  } finally {
    await dev?.stop();
  }
}

async function serve(config: Config, opts: UpOptions, client: Client, address: string, uiUrl: string | null): Promise<void> {
  const source = config.source.name;
  const { say } = opts;
  // 2–4. The change stream, the source (publication, then slot), the replicas.
  const { tables } = await initialize(config, say);

  // 5. Workers, then workflows (re-attaching to running ones keeps their position and state).
  // Search attributes for the Temporal UI: registered here when missing and allowed; else said why, and workflows run without them.
  const ui = await ensureSearchAttributes(client, { address, namespace: config.temporal.namespace });
  if (ui.message) say(ui.message);
  const workers = await startWorkers(config, address, opts.queues);
  await startVisible(client, captureWorkflow, {
    workflowId: captureWorkflowId(source),
    taskQueue: CAPTURE_TASK_QUEUE,
    args: [{ source }],
    workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
  }, captureVisibility(ui.registered, source));
  // A capture stopped in failed / needs_resync (e.g. its slot was lost: initialize just created it anew
  // and marked the gap) waits for resume; starting pgferry is the operator saying "go on". For a
  // running capture the signal changes nothing. (No status query: the capture worker may not be up yet.)
  await client.workflow.getHandle(captureWorkflowId(source)).signal(resumeSignal);
  for (const r of config.replicas) {
    await startVisible(client, replicaWorkflow, {
      workflowId: replicaWorkflowId(r.name),
      taskQueue: APPLY_TASK_QUEUE,
      args: [{ replica: r.name, source, tables: replicaShare(config, r.name, tables) }],
      workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
    }, replicaVisibility(ui.registered, r.name, source));
  }
  say(`pgferry is running: source '${source}' → ${config.replicas.map((r) => `'${r.name}'`).join(', ') || 'no replicas'} (worker queues: ${opts.queues.join(', ')})`);
  if (uiUrl) say(`Temporal Web UI: ${uiUrl}/namespaces/${config.temporal.namespace}/workflows  (workflows ${captureWorkflowId(source)}, ${replicaWorkflowId('<name>')})`);
  if (opts.onRunning) opts.onRunning();
  else say(`Status: npx pgferry status   ·   Stop: Ctrl-C`);

  // 6. Run until interrupted.
  const until =
    opts.until ??
    new Promise<string>((resolve) => {
      process.once('SIGINT', () => resolve('SIGINT'));
      process.once('SIGTERM', () => resolve('SIGTERM'));
    });
  void until.then(async (reason) => {
    say(`${reason}: stopping (workflows stay where they are; run pgferry up again to continue)…`);
    await workers.shutdown();
  });
  await workers.run;
}
