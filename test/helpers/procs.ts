import { spawn, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * pgferry CLI processes started by tests (the compiled CLI, exactly what a
 * user runs), with their output kept for assertions and failure reports.
 */
export const ROOT = path.resolve(__dirname, '../..');
export const CLI = path.join(ROOT, 'bin', 'pgferry.js');

export interface Proc {
  child: ChildProcess;
  output: () => string;
  /** What it wrote to stdout alone. */
  stdout: () => string;
  exited: Promise<number | null>;
  kill9: () => Promise<void>;
  stop: () => Promise<number | null>;
}

/** Extra node flags for every pgferry process a test starts, e.g. PGFERRY_TEST_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof". */
const NODE_ARGS = (process.env.PGFERRY_TEST_NODE_ARGS ?? '').split(' ').filter(Boolean);

export function startCli(args: string[], env: NodeJS.ProcessEnv): Proc {
  return startNode(CLI, args, env);
}

/** Any node script as a process of its own (e.g. a test application using pgferry's API). */
export function startNode(script: string, args: string[], env: NodeJS.ProcessEnv): Proc {
  const child = spawn(process.execPath, [...NODE_ARGS, script, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let stdout = '';
  child.stdout!.on('data', (d) => {
    out += d;
    stdout += d;
  });
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    child,
    output: () => out,
    stdout: () => stdout,
    exited,
    async kill9() {
      child.kill('SIGKILL');
      await exited;
    },
    /** SIGTERM, as Ctrl-C would; resolves with the exit code (null if it had to be killed after 20 s). */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Peak resident set size of a process (MB), from the kernel's high-water mark. */
export function peakRssMb(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmHWM for pid ${pid}`);
  return Number(m[1]) / 1024;
}

/** CPU time (user + system, seconds) a process has used so far. */
export function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields after "pid (comm) "
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

/** The machine's CPU counters (all cores, clock ticks): busy and total. */
export function machineCpu(): { busy: number; total: number } {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3] - f[4], total }; // idle, iowait
}

/** CPU seconds (user + system) of each of these processes now; a process gone already is left out. */
export function cpuOf(pids: number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of pids) {
    try {
      out.set(pid, cpuSeconds(pid));
    } catch {
      // exited
    }
  }
  return out;
}
