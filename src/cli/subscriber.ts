/**
 * `pgferry subscriber …`: application subscribers that run as Temporal
 * workflows (runSubscriberWorker). Subscribers run with subscribe() live in
 * their application's process only; their positions are rows in the
 * application's positions table.
 */
import type { Command } from 'commander';
import { Client, WorkflowNotFoundError } from '@temporalio/client';
import { loadConfig } from '../config';
import { subscriberWorkflowId } from '../names';
import { connectClient } from '../temporal/connection';
import { SubscriberStatus, subscriberStatusQuery } from '../../workflows/messages';
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
        const views: SubscriberStatus[] = [];
        for (const n of names) views.push(await subscriberStatus(client, n));
        if (opts.json) printJson(name ? views[0] : views);
        else if (!views.length) process.stdout.write('no subscriber workflows are running (an application starts them with runSubscriberWorker)\n');
        else {
          const rows = [['SUBSCRIBER', 'SOURCE', 'STATE', 'POSITION', 'LAST COMMIT', 'TXNS', 'CHANGES', 'ERROR']];
          for (const v of views) rows.push([v.subscriber, v.source, v.state, v.lsn ?? '-', v.lastCommitTime ?? '-', String(v.txns), String(v.changes), v.lastError ?? '']);
          process.stdout.write(`${table(rows)}\n`);
        }
        if (views.some((v) => v.state === 'failed' || v.state === 'needs_resync')) process.exitCode = EXIT.failed;
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

async function subscriberStatus(client: Client, name: string): Promise<SubscriberStatus> {
  return notFoundAsFailure(name, client.workflow.getHandle(subscriberWorkflowId(name)).query(subscriberStatusQuery));
}

async function notFoundAsFailure<T>(name: string, p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) {
      throw new CliFailure(`subscriber '${name}' not found (no running workflow ${subscriberWorkflowId(name)}); pgferry subscriber status lists the running ones`, EXIT.failed);
    }
    throw err;
  }
}

async function listSubscriberNames(client: Client): Promise<string[]> {
  const names: string[] = [];
  for await (const wf of client.workflow.list({ query: `WorkflowType = 'subscriberWorkflow' AND ExecutionStatus = 'Running'` })) {
    names.push(wf.workflowId.replace(/^pgferry-subscriber-/, ''));
  }
  return names.sort();
}
