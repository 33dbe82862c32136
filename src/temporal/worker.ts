/**
 * What every pgferry worker process needs from the Temporal SDK, whatever
 * activities it serves: the SDK's logs routed into pgferry's log, the
 * prebuilt workflow bundle, a connection with a clear error, and running a
 * set of workers until they stop. The processes themselves are composed in
 * src/app/ (replication workers, subscriber workers).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DefaultLogger, LogLevel, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { UnavailableError, describeCause } from '../errors';
import { logger } from '../logger';
import { temporalTls, TemporalSettings } from './connection';


let runtimeInstalled = false;

/** Route the SDK's own logs (and `log` in workflows and activities) into pgferry's structured log. */
export function installRuntimeLogger(): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  const level = (process.env.PGFERRY_TEMPORAL_LOG_LEVEL ?? 'WARN') as LogLevel;
  Runtime.install({
    logger: new DefaultLogger(level, (entry) => {
      const fields = { ...(entry.meta ?? {}), component: 'temporal' };
      const lvl = entry.level.toLowerCase() as 'trace' | 'debug' | 'info' | 'warn' | 'error';
      logger[lvl === 'trace' ? 'trace' : lvl](fields, entry.message);
    }),
  });
}

export function workflowSource(): { workflowBundle: { codePath: string } } | { workflowsPath: string } {
  // Prebuilt by `npm run build`; bundling at start-up would cost seconds.
  // dist/src/temporal → dist/workflow-bundle.js; src/temporal (TypeScript run directly, as in tests) → dist/ as built.
  for (const bundle of [path.resolve(__dirname, '../../workflow-bundle.js'), path.resolve(__dirname, '../../dist/workflow-bundle.js')]) {
    if (fs.existsSync(bundle)) return { workflowBundle: { codePath: bundle } };
  }
  return { workflowsPath: require.resolve('../../workflows') };
}

export interface RunningWorkers {
  run: Promise<void>;
  shutdown(): Promise<void>;
}

/** Run workers together until all stop (shutdown(), or a fatal error), then release what they used. */
export function runningWorkers(workers: Worker[], release: () => Promise<void>): RunningWorkers {
  const run = Promise.all(workers.map((w) => w.run()))
    .then(() => undefined)
    .finally(release);
  return {
    run,
    async shutdown() {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await run;
    },
  };
}

/** A worker connection to Temporal, or an error naming the address and the fix. */
export async function connectWorker(temporal: Pick<TemporalSettings, 'address' | 'tls'>, fix: string): Promise<NativeConnection> {
  installRuntimeLogger();
  try {
    return await NativeConnection.connect({ address: temporal.address, tls: temporalTls(temporal as TemporalSettings) });
  } catch (err) {
    throw new UnavailableError(`Temporal at ${temporal.address}: cannot connect (${describeCause(err)}); ${fix}`, { cause: err });
  }
}
