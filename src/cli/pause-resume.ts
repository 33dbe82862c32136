/**
 * `<kind> pause <name>` and `<kind> resume <name>` for pgferry's consumer
 * workflows (replica, subscriber). Each executes the workflow's `setPaused`
 * update and waits, up to REACH_DEADLINE_MS, for its answer, which comes once
 * the state is reached (when exactly: workflows/pause-switch.ts), so "paused"
 * is printed only when nothing more is applied.
 *
 * Where the update cannot be used, the `pause` / `resume` signal (same change,
 * no answer) is sent instead and the output says so: a workflow from an older
 * build has no update handler, a Temporal server may have updates disabled,
 * and a workflow whose worker is down does not take the update in time (a
 * signal is durable: it is applied when the worker is back).
 */
import type { Command } from 'commander';
import {
  ApplicationFailure,
  Client,
  QueryDefinition,
  ServiceError,
  WorkflowHandle,
  WorkflowNotFoundError,
  UpdateDefinition,
  WorkflowUpdateFailedError,
  WorkflowUpdateHandle,
  WorkflowUpdateRPCTimeoutOrCancelledError,
  WorkflowUpdateStage,
  isGrpcServiceError,
} from '@temporalio/client';
import { loadConfig } from '../config';
import { connectClient } from '../temporal/connection';
import { SetPausedRequest, pauseSignal, replicaSetPausedUpdate, replicaStatusQuery, resumeSignal, subscriberSetPausedUpdate, subscriberStatusQuery } from '../../workflows/messages';
import { action } from './command';
import { CliFailure, EXIT, printJson } from './output';

export interface PauseResumeSpec {
  kind: 'replica' | 'subscriber';
  workflowId: (name: string) => string;
  /** Where to find the names, for "not found". */
  listHint: string;
  /** `done`: printed after "<kind> '<name>' " once the workflow reports it is paused. */
  pause: { description: string; done: string };
  resume: { description: string };
}

export type Verb = 'pause' | 'resume';

/** How long a command waits for the state; long enough for a batch of ordinary size to commit. */
const REACH_DEADLINE_MS = 30_000;
/** For the status shown when the state was not reached in time. */
const STATUS_DEADLINE_MS = 5_000;

/** What both consumer statuses have and this command reads. */
interface ConsumerStatus {
  state: string;
  lastError: string | null;
}

/** How a request ended: the update answered; or it was not answered (yet), and why. */
export type Outcome =
  | { kind: 'answered'; status: ConsumerStatus }
  | { kind: 'pending' }
  | { kind: 'signalled'; why: 'old-workflow' | 'no-updates' | 'not-taken' };

/** gRPC status codes with which a server refuses updates altogether (disabled on the namespace, or too old). */
const GRPC_PERMISSION_DENIED = 7;
const GRPC_UNIMPLEMENTED = 12;

export function addPauseResumeCommands(group: Command, spec: PauseResumeSpec): void {
  for (const [verb, description] of [
    ['pause', spec.pause.description],
    ['resume', spec.resume.description],
  ] as const) {
    group
      .command(`${verb} <name>`)
      .description(description)
      .option('--json', 'machine-readable output')
      .action(
        action(async (name: string, opts: { json?: boolean }) => {
          const client = await connectClient(loadConfig({}).temporal);
          try {
            const handle = client.workflow.getHandle(spec.workflowId(name));
            const outcome = await notFoundAsFailure(spec, name, () => request(client, handle, spec.kind, verb));
            const state = outcome.kind === 'answered' ? outcome.status.state : outcome.kind === 'pending' ? await currentState(client, handle, spec.kind) : null;
            report(spec, name, verb, state, describe(spec, name, verb, outcome, state), opts.json);
          } finally {
            await client.connection.close();
          }
        }),
      );
  }
}

/** Execute the update within the deadline; fall back to the signal where the update cannot be used. */
export async function request(client: Client, handle: WorkflowHandle, kind: PauseResumeSpec['kind'], verb: Verb): Promise<Outcome> {
  const deadline = Date.now() + REACH_DEADLINE_MS;
  const update: UpdateDefinition<ConsumerStatus, [SetPausedRequest]> = kind === 'replica' ? replicaSetPausedUpdate : subscriberSetPausedUpdate;
  const signal = () => handle.signal(verb === 'pause' ? pauseSignal : resumeSignal);
  let started: WorkflowUpdateHandle<ConsumerStatus>;
  try {
    started = await client.withDeadline(deadline, () => handle.startUpdate(update, { args: [{ paused: verb === 'pause' }], waitForStage: WorkflowUpdateStage.ACCEPTED }));
  } catch (err) {
    if (err instanceof WorkflowUpdateRPCTimeoutOrCancelledError) return signal().then(() => ({ kind: 'signalled', why: 'not-taken' }));
    if (updatesRefused(err)) return signal().then(() => ({ kind: 'signalled', why: 'no-updates' }));
    throw err;
  }
  try {
    return { kind: 'answered', status: await client.withDeadline(deadline, () => started.result()) };
  } catch (err) {
    // Accepted: the request is in the workflow's history and is answered when the state is reached.
    if (err instanceof WorkflowUpdateRPCTimeoutOrCancelledError) return { kind: 'pending' };
    if (isUnknownUpdate(err)) return signal().then(() => ({ kind: 'signalled', why: 'old-workflow' }));
    throw err;
  }
}

/**
 * A workflow without a `setPaused` handler (an older build) rejects the update
 * with this ApplicationFailure (@temporalio/workflow, rejectBufferedUpdates).
 * It has no type of its own ('Error'), so its message is all there is to go by.
 */
function isUnknownUpdate(err: unknown): boolean {
  return err instanceof WorkflowUpdateFailedError && err.cause instanceof ApplicationFailure && err.cause.message.startsWith('No registered handler for update');
}

/** Servers before 1.25 come with updates disabled (PERMISSION_DENIED); older ones do not know them. */
function updatesRefused(err: unknown): boolean {
  const cause = err instanceof ServiceError ? err.cause : err;
  return isGrpcServiceError(cause) && (cause.code === GRPC_PERMISSION_DENIED || cause.code === GRPC_UNIMPLEMENTED);
}

async function currentState(client: Client, handle: WorkflowHandle, kind: PauseResumeSpec['kind']): Promise<string | null> {
  const query: QueryDefinition<ConsumerStatus> = kind === 'replica' ? replicaStatusQuery : subscriberStatusQuery;
  try {
    return (await client.withDeadline(Date.now() + STATUS_DEADLINE_MS, () => handle.query(query))).state;
  } catch {
    return null; // only for display: the answer to the request is what matters
  }
}

/** The line to print, and whether the state asked for was reached (or, with the signal, nothing more could be known). */
function describe(spec: PauseResumeSpec, name: string, verb: Verb, outcome: Outcome, state: string | null): { ok: boolean; message: string } {
  const who = `${spec.kind} '${name}'`;
  const seconds = REACH_DEADLINE_MS / 1000;
  switch (outcome.kind) {
    case 'answered':
      return verb === 'pause' ? paused(spec, who, outcome.status) : resumed(who, outcome.status);
    case 'pending':
      return {
        ok: false,
        message: `${verb} sent to ${who}, but it was not ${verb === 'pause' ? 'paused' : 'running'} within ${seconds} s (state ${state ?? 'unknown'})${verb === 'pause' ? '; it pauses once the batch in flight finishes' : ''}; see pgferry ${spec.kind} status ${name}`,
      };
    case 'signalled':
      if (outcome.why === 'not-taken') {
        return { ok: false, message: `${who} did not take the ${verb} request within ${seconds} s (is its worker running?); sent the ${verb} signal instead, applied when the workflow runs again` };
      }
      return {
        ok: true,
        message: `${verb} signal sent to ${who} (${outcome.why === 'old-workflow' ? 'its workflow is from an older pgferry' : 'this Temporal server does not accept updates'}, so it cannot tell when it is done); see pgferry ${spec.kind} status ${name}`,
      };
  }
}

function paused(spec: PauseResumeSpec, who: string, s: ConsumerStatus): { ok: boolean; message: string } {
  if (s.state === 'paused') return { ok: true, message: `${who} ${spec.pause.done}` };
  if (s.state === 'failed' || s.state === 'needs_resync') {
    return { ok: true, message: `${who} is stopped in state ${s.state}, so nothing is applied; it stays stopped until resume, which also retries it` };
  }
  return { ok: false, message: `${who} was resumed before it reached the pause point (state ${s.state}); send pause again` };
}

function resumed(who: string, s: ConsumerStatus): { ok: boolean; message: string } {
  if (s.state === 'paused') return { ok: false, message: `${who} was paused again (by a later pause) before it resumed` };
  // failed / needs_resync with an error: it resumed, and failed again on the same cause.
  if (s.lastError !== null) return { ok: false, message: `${who} resumed but stopped again in state ${s.state}: ${s.lastError}` };
  return { ok: true, message: `${who} resumed (state ${s.state})` };
}

/** Human line on stdout (stderr when not ok), or JSON `{ ok, <kind>: name, action, state, message }`; exit 1 when not ok. */
function report(spec: PauseResumeSpec, name: string, verb: Verb, state: string | null, r: { ok: boolean; message: string }, json?: boolean): void {
  if (json) printJson({ ok: r.ok, [spec.kind]: name, action: verb, state, message: r.message });
  else if (r.ok) process.stdout.write(`${r.message}\n`);
  else process.stderr.write(`pgferry: ${r.message}\n`);
  if (!r.ok) process.exitCode = EXIT.failed;
}

async function notFoundAsFailure<T>(spec: PauseResumeSpec, name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) {
      throw new CliFailure(`${spec.kind} '${name}' not found (no running workflow ${spec.workflowId(name)}); ${spec.listHint}`, EXIT.failed);
    }
    throw err;
  }
}
