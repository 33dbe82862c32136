import type { Command } from 'commander';
import { WorkflowNotFoundError } from '@temporalio/client';
import { loadConfig } from '../config';
import { connectClient } from '../temporal/connection';
import { pauseSignal, resumeSignal } from '../../workflows/messages';
import { action } from './command';
import { CliFailure, EXIT, printJson } from './output';

/** `<kind> pause <name>` and `<kind> resume <name>`: the two signals every pgferry consumer workflow (replica, subscriber) takes. */
export interface PauseResumeSpec {
  kind: 'replica' | 'subscriber';
  workflowId: (name: string) => string;
  /** Where to find the names, for "not found". */
  listHint: string;
  pause: { description: string; done: string };
  resume: { description: string };
}

export function addPauseResumeCommands(group: Command, spec: PauseResumeSpec): void {
  for (const [verb, signal, description, done] of [
    ['pause', pauseSignal, spec.pause.description, spec.pause.done],
    ['resume', resumeSignal, spec.resume.description, 'resumed'],
  ] as const) {
    group
      .command(`${verb} <name>`)
      .description(description)
      .option('--json', 'machine-readable output')
      .action(
        action(async (name: string, opts: { json?: boolean }) => {
          const client = await connectClient(loadConfig({}).temporal);
          try {
            await client.workflow.getHandle(spec.workflowId(name)).signal(signal);
          } catch (err) {
            if (err instanceof WorkflowNotFoundError) {
              throw new CliFailure(`${spec.kind} '${name}' not found (no running workflow ${spec.workflowId(name)}); ${spec.listHint}`, EXIT.failed);
            }
            throw err;
          }
          if (opts.json) printJson({ ok: true, [spec.kind]: name, action: verb });
          else process.stdout.write(`${spec.kind} '${name}' ${done}\n`);
        }),
      );
  }
}
