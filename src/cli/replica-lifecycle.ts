/**
 * `replica start <name>` and `replica stop <name>`: one configured replica's
 * workflow, without restarting anything else.
 *
 * `start` starts `replicaWorkflow` with the one-field input `{"replica":
 * "<name>"}` — exactly what the Temporal UI's Start Workflow form or
 * `temporal workflow start` would send — so the worker resolves the source and
 * tables from its own configuration, and the replica continues from the
 * checkpoint in its own pgferry.progress row. A workflow already running is
 * left alone and said so.
 *
 * `stop` pauses first (the setPaused update answers once the batch in flight
 * has committed), then terminates the workflow: nothing is half-applied, and
 * the checkpoint stays in the replica for the next `start` (or `pgferry up`,
 * which starts every configured replica that is not running).
 */
import type { Command } from 'commander';
import { Client, WorkflowIdConflictPolicy } from '@temporalio/client';
import { loadConfig, Config } from '../config';
import { connectClient } from '../temporal/connection';
import { replicaVisibility, searchAttributesRegistered, startVisible } from '../temporal/search-attributes';
import { APPLY_TASK_QUEUE, replicaWorkflowId } from '../names';
import { replicaStatusQuery, ReplicaStatus } from '../../workflows/messages';
import { action } from './command';
import { CliFailure, EXIT, printJson } from './output';
import { request } from './pause-resume';
import { waitUntil } from '../deadline';
import { describeOrNull, pendingActivity } from '../temporal/inspect';

/** How long `start` waits for the worker to take the workflow and report a state other than starting. */
const START_DEADLINE_MS = 30_000;

export function addReplicaLifecycleCommands(replica: Command): void {
  replica
    .command('start <name>')
    .description("start (or continue) one configured replica's workflow from its checkpoint, leaving everything else as it is")
    .option('--json', 'machine-readable output')
    .action(
      action(async (name: string, opts: { json?: boolean }) => {
        const config = loadConfig({});
        requireConfigured(config, name);
        const client = await connectClient(config.temporal);
        try {
          const r = await start(client, config, name);
          report(name, 'start', r, opts.json);
        } finally {
          await client.connection.close();
        }
      }),
    );

  replica
    .command('stop <name>')
    .description("pause one replica, then end its workflow; its checkpoint stays in the replica and pgferry replica start continues from it")
    .option('--json', 'machine-readable output')
    .action(
      action(async (name: string, opts: { json?: boolean }) => {
        const client = await connectClient(loadConfig({}).temporal);
        try {
          report(name, 'stop', await stop(client, name), opts.json);
        } finally {
          await client.connection.close();
        }
      }),
    );
}

interface Result {
  ok: boolean;
  state: string | null;
  message: string;
}

/** The CLI's own configuration lists the replicas the workers should know; a name outside it is a typo until shown otherwise. */
function requireConfigured(config: Config, name: string): void {
  const known = config.replicas.map((r) => r.name);
  if (known.length && !known.includes(name)) {
    throw new CliFailure(`replica '${name}' is not in the configuration (replicas: ${known.map((n) => `'${n}'`).join(', ')}); add it under replicas: first`, EXIT.usage);
  }
}

async function queryState(client: Client, workflowId: string): Promise<ReplicaStatus | null> {
  try {
    return await client.withDeadline(Date.now() + 5_000, () => client.workflow.getHandle(workflowId).query(replicaStatusQuery));
  } catch {
    return null;
  }
}

async function start(client: Client, config: Config, name: string): Promise<Result> {
  const workflowId = replicaWorkflowId(name);
  const before = await describeOrNull(client, workflowId);
  if (before?.status.name === 'RUNNING') {
    const s = await queryState(client, workflowId);
    return { ok: true, state: s?.state ?? null, message: `replica '${name}' is already running (workflow ${workflowId}, state ${s?.state ?? 'unknown'}); nothing started` };
  }
  const registered = await searchAttributesRegistered(() => client, config.temporal.namespace);
  const handle = await startVisible(
    client,
    'replicaWorkflow',
    { workflowId, taskQueue: APPLY_TASK_QUEUE, args: [{ replica: name }], workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING },
    replicaVisibility(registered, name, config.source.name),
  );
  const previously = before ? ` (its previous run ended ${before.status.name.toLowerCase()})` : '';
  // The worker resolves the configuration, checks the replica and starts applying: wait until it says how that went.
  let seen: ReplicaStatus | null = null;
  const reached = await waitUntil(START_DEADLINE_MS, 500, async () => {
    seen = await queryState(client, workflowId);
    const d = await handle.describe();
    if (d.status.name !== 'RUNNING') return true;
    return seen !== null && seen.state !== 'starting';
  });
  const d = await handle.describe();
  if (d.status.name !== 'RUNNING') {
    let why = d.status.name.toLowerCase();
    try {
      await handle.result();
    } catch (err) {
      why = (err as { cause?: Error })?.cause?.message ?? (err as Error).message;
    }
    return { ok: false, state: null, message: `replica '${name}': its workflow ${workflowId} started and ended at once: ${why}` };
  }
  const s = seen as ReplicaStatus | null;
  if (!reached || !s) {
    // Taken but not through its first step (resolving the configuration, checking the replica): say why, if Temporal knows.
    const act = await pendingActivity(client, workflowId).catch(() => null);
    const why = act?.lastError
      ? `its worker is retrying: ${act.lastError}`
      : s
        ? `it is still starting (see pgferry replica status ${name})`
        : 'no worker took it; is pgferry up (or pgferry worker --queues apply) running against this Temporal?';
    return { ok: false, state: s?.state ?? null, message: `replica '${name}': started workflow ${workflowId}${previously}, but it was not running within ${START_DEADLINE_MS / 1000} s: ${why}` };
  }
  if (s.state === 'failed' || s.state === 'needs_resync') {
    return { ok: false, state: s.state, message: `replica '${name}': started workflow ${workflowId}${previously}; it stopped in state ${s.state}: ${s.lastError ?? 'see pgferry replica status ' + name}` };
  }
  return { ok: true, state: s.state, message: `replica '${name}' started (workflow ${workflowId}${previously}); state ${s.state}, continuing from its checkpoint in the replica` };
}

async function stop(client: Client, name: string): Promise<Result> {
  const workflowId = replicaWorkflowId(name);
  const d = await describeOrNull(client, workflowId);
  if (!d || d.status.name !== 'RUNNING') {
    return { ok: true, state: null, message: `replica '${name}' is not running (${d ? `workflow ${workflowId} ended ${d.status.name.toLowerCase()}` : `no workflow ${workflowId}`}); nothing to stop` };
  }
  const handle = client.workflow.getHandle(workflowId);
  const outcome = await request(client, handle, 'replica', 'pause');
  const paused = outcome.kind === 'answered';
  const state = paused ? outcome.status.state : null;
  await handle.terminate(`pgferry replica stop ${name}: ${paused ? `stopped in state ${state}` : 'not known to be paused'}; its checkpoint is in the replica, pgferry replica start ${name} continues from it`);
  const cutShort = 'a batch cut short rolls back, and the checkpoint holds what committed';
  const how =
    outcome.kind === 'answered'
      ? state === 'paused'
        ? 'paused (the batch in flight committed), then ended its workflow'
        : `it was stopped in state ${state}; ended its workflow`
      : outcome.kind === 'signalled' && outcome.why !== 'not-taken'
        ? `sent it the pause signal (${outcome.why === 'old-workflow' ? 'its workflow is from an older pgferry' : 'this Temporal server does not accept updates'}, so it cannot say when it is paused), then ended its workflow; ${cutShort}`
        : `it did not pause within 30 s (is its worker running?), so its workflow was ended as it was; ${cutShort}`;
  return { ok: true, state: 'stopped', message: `replica '${name}' stopped: ${how}. Its checkpoint stays in the replica; pgferry replica start ${name} continues from it` };
}

function report(name: string, verb: 'start' | 'stop', r: Result, json?: boolean): void {
  if (json) printJson({ ok: r.ok, replica: name, action: verb, state: r.state, message: r.message });
  else if (r.ok) process.stdout.write(`${r.message}\n`);
  else process.stderr.write(`pgferry: ${r.message}\n`);
  if (!r.ok) process.exitCode = EXIT.failed;
}
