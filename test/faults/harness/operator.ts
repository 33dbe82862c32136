/**
 * What an operator sees and does: pgferry's status commands read as JSON
 * (replica, system, capture), and the operator's actions after a fault:
 * `replica resync`, and a Temporal client (what the Temporal UI does:
 * signals, describe).
 */
import { Client, Connection } from '@temporalio/client';
import { cli } from '../../helpers/fixture';
import { runCli } from '../../helpers/procs';
import type { FaultWorld } from './system';

export interface Reported {
  /** Exit code of the CLI command. */
  code: number | null;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  v: any;
}

/** `pgferry replica status <name> --json`. */
export async function replicaStatus(f: FaultWorld, name: string): Promise<Reported> {
  const r = await cli(f.w, ['replica', 'status', name, '--json']);
  return { code: r.code, v: parseJson(r.stdout, r.stderr) };
}

/** `pgferry status --json` (with the source URL, so the slot is shown too). */
export async function systemStatus(f: FaultWorld): Promise<Reported> {
  const r = await runCli(['status', '--json'], { ...f.w.env, PGFERRY_SOURCE: f.w.sourceUrl });
  return { code: r.code, v: parseJson(r.stdout, r.stderr) };
}

/** `pgferry capture status --json`. */
export async function captureStatus(f: FaultWorld): Promise<Reported> {
  const r = await cli(f.w, ['capture', 'status', '--json']);
  return { code: r.code, v: parseJson(r.stdout, r.stderr) };
}

function parseJson(stdout: string, stderr: string): unknown {
  try {
    return JSON.parse(stdout);
  } catch {
    return { unparsable: stdout, stderr };
  }
}

/** A Temporal client on the world's dev server (what an operator's Temporal UI does: signals, describe). */
export async function withTemporal<T>(f: FaultWorld, fn: (c: Client) => Promise<T>): Promise<T> {
  const connection = await Connection.connect({ address: f.w.temporal.address });
  try {
    return await fn(new Client({ connection }));
  } finally {
    await connection.close();
  }
}

/** `replica resync <name>` with the world's source and that replica's URL. */
export async function resync(f: FaultWorld, name: string, url = f.w.replicaUrls[name]) {
  return runCli(['replica', 'resync', name, '--source', f.w.sourceUrl, '--replica', `${name}=${url}`], f.w.env, 600_000);
}
