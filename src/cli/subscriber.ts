/**
 * `pgferry subscriber …`: application subscribers that run as Temporal
 * workflows (runSubscriberWorker). Subscribers run with subscribe() live in
 * their application's process only; their positions are rows in the
 * application's positions table.
 */
import type { Command } from 'commander';
import { loadConfig } from '../config';
import { ConfigError } from '../errors';
import { subscriberWorkflowId } from '../names';
import { connectClient } from '../temporal/connection';
import { listSubscriberNames, subscriberView, SubscriberView } from '../temporal/inspect';
import { addPauseResumeCommands } from './pause-resume';
import { action } from './command';
import { CliFailure, EXIT, printJson, table } from './output';

export function addSubscriberCommands(program: Command): void {
  const cmd = program.command('subscriber').description('inspect and control application subscribers running as Temporal workflows');

  cmd
    .command('status [name]')
    .description('state, position, counts and last error of one or every subscriber workflow')
    .option('--json', 'machine-readable output')
    .action(
      action(async (name: string | undefined, opts: { json?: boolean }) => {
        const client = await connectClient(loadConfig({}).temporal);
        const names = name ? [name] : await listSubscriberNames(client);
        const views: SubscriberView[] = [];
        for (const n of names) views.push(await found(n, subscriberView(client, n)));
        if (opts.json) printJson(name ? views[0] : views);
        else if (!views.length) process.stdout.write('no subscriber workflows are running (an application starts them with runSubscriberWorker)\n');
        else process.stdout.write(`${renderSubscribers(views)}\n`);
        if (views.some(subscriberStopped)) process.exitCode = EXIT.failed;
      }),
    );

  addPauseResumeCommands(cmd, {
    kind: 'subscriber',
    workflowId: subscriberWorkflowId,
    listHint: 'pgferry subscriber status lists the running ones',
    pause: { description: 'stop delivering to a subscriber (its position is kept)', done: 'paused: the batch in flight has finished, nothing more is delivered until resume' },
    resume: { description: 'continue a paused subscriber, or retry a failed one (after fixing its handler)' },
  });
}

/** A subscriber that needs someone: failed, needs a resync, or its application's worker does not answer. */
export function subscriberStopped(v: SubscriberView): boolean {
  return v.state === 'failed' || v.state === 'needs_resync' || v.state === 'not answering';
}

export function renderSubscribers(views: SubscriberView[]): string {
  const rows = [['SUBSCRIBER', 'SOURCE', 'STATE', 'POSITION', 'LAG', 'TXNS', 'CHANGES', 'ERROR']];
  for (const v of views) {
    const lag = v.lagBytes === null ? '?' : v.lagBytes === 0 ? '0' : `${v.lagBytes} B${v.lagSeconds !== null ? ` / ${v.lagSeconds.toFixed(1)} s` : ''}`;
    rows.push([v.subscriber, v.source ?? '?', v.state, v.lsn ?? '-', lag, String(v.txns), String(v.changes), v.lastError ?? (v.retrying ? `retrying: ${v.retrying}` : '')]);
  }
  return table(rows);
}

async function found<T>(name: string, p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    if (err instanceof ConfigError) {
      throw new CliFailure(`subscriber '${name}' not found (no running workflow ${subscriberWorkflowId(name)}); pgferry subscriber status lists the running ones`, EXIT.failed);
    }
    throw err;
  }
}
