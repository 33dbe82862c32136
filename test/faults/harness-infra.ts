import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as amqp from 'amqplib';
import { startDevServer } from '../../src/temporal/dev-server';
import { logger } from '../../src/logger';
import { cli, upArgs, World } from '../helpers/fixture';
import { startCli, Proc } from '../helpers/procs';
import { REPLICAS, type FaultWorld } from './harness';
import { freePort } from '../helpers/ports';
import { waitFor } from '../helpers/wait';

/**
 * Infrastructure faults for the fault suite: the Temporal dev server killed
 * and restarted in place, and a RabbitMQ node of the test's own that can be
 * stopped and started without disturbing anybody else's tests.
 */

const run = promisify(execFile);

/**
 * SIGKILL the world's Temporal dev server, run `whileDown` (the test's measure
 * of how long it stays dead), then start it again on the same port, UI port
 * and SQLite file. `w.temporal` is updated in place (its teardown stops the
 * new process).
 */
export async function restartTemporal(w: World, whileDown: () => Promise<void> = async () => undefined): Promise<{ downMs: number }> {
  const t = w.temporal;
  const port = Number(t.address.split(':').pop());
  const old = t.process;
  if (old.exitCode === null && old.signalCode === null) {
    const exited = new Promise((r) => old.once('exit', r));
    old.kill('SIGKILL');
    await exited;
  }
  const downAt = Date.now();
  await whileDown();
  // The port was just released by a killed process; the dev server exits at once if it cannot bind
  // (or if its HTTP API / metrics port, chosen at random, collides): try again a few times.
  let lastErr: unknown;
  for (let attempt = 1; attempt <= 5; attempt++) {
    try {
      const server = await startDevServer({ dataDir: t.dataDir, port, uiPort: t.uiPort, log: logger.child({ test: true }), timeoutMs: 120_000 });
      Object.assign(t, { process: server.process, stop: server.stop, uiUrl: server.uiUrl });
      return { downMs: Date.now() - downAt };
    } catch (err) {
      lastErr = err;
      if (!/exited/.test((err as Error).message)) throw err;
      await new Promise((r) => setTimeout(r, 1000 * attempt)); // back off before the next attempt
    }
  }
  throw lastErr;
}

const RABBIT_BIN = process.env.PGFERRY_RABBITMQ_BIN ?? '/usr/lib/rabbitmq/bin';
const RABBIT_HOME = '/var/lib/rabbitmq';

/**
 * A RabbitMQ node of its own (the machine's RabbitMQ installation, a separate
 * node name, ports and data directory), for faults that stop RabbitMQ: the
 * machine's shared server stays up for every other test running meanwhile.
 * As root it runs as the 'rabbitmq' user (whose Erlang cookie it uses).
 */
export class PrivateRabbit {
  private constructor(
    readonly dir: string,
    readonly node: string,
    readonly port: number,
    readonly distPort: number,
  ) {}

  get url(): string {
    return `amqp://guest:guest@127.0.0.1:${this.port}`;
  }

  static async start(): Promise<PrivateRabbit> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgferry-rabbit-'));
    const [port, distPort] = [await freePort(), await freePort()];
    const node = `pgferryfault${Math.random().toString(36).slice(2, 10)}@localhost`;
    // guest may connect from 127.0.0.1 only (the default); the listener is on loopback anyway.
    fs.writeFileSync(path.join(dir, 'rabbitmq.conf'), `listeners.tcp.local = 127.0.0.1:${port}\n`);
    fs.writeFileSync(path.join(dir, 'enabled_plugins'), '[].\n');
    fs.writeFileSync(path.join(dir, 'env.conf'), '');
    if (process.getuid?.() === 0) await run('chown', ['-R', 'rabbitmq:rabbitmq', dir]);
    const r = new PrivateRabbit(dir, node, port, distPort);
    await r.startNode();
    return r;
  }

  private env(): string[] {
    return [
      `HOME=${RABBIT_HOME}`,
      `RABBITMQ_CONF_ENV_FILE=${path.join(this.dir, 'env.conf')}`,
      `RABBITMQ_NODENAME=${this.node}`,
      `RABBITMQ_CONFIG_FILE=${path.join(this.dir, 'rabbitmq.conf')}`,
      `RABBITMQ_MNESIA_BASE=${path.join(this.dir, 'mnesia')}`,
      `RABBITMQ_LOG_BASE=${path.join(this.dir, 'log')}`,
      `RABBITMQ_ENABLED_PLUGINS_FILE=${path.join(this.dir, 'enabled_plugins')}`,
      `RABBITMQ_DIST_PORT=${this.distPort}`,
      'ERL_EPMD_ADDRESS=127.0.0.1',
      'ERL_FLAGS=-kernel inet_dist_use_interface {127,0,0,1}',
    ];
  }

  private async exec(bin: string, args: string[], timeoutMs = 120_000): Promise<string> {
    const argv = ['env', ...this.env(), path.join(RABBIT_BIN, bin), ...args];
    const [file, fileArgs] = process.getuid?.() === 0 ? ['runuser', ['-u', 'rabbitmq', '--', ...argv]] : [argv[0], argv.slice(1)];
    const cwd = fs.existsSync(RABBIT_HOME) ? RABBIT_HOME : this.dir;
    const { stdout } = await run(file, fileArgs, { cwd, timeout: timeoutMs, encoding: 'utf8' });
    return stdout;
  }

  ctl(...args: string[]): Promise<string> {
    return this.exec('rabbitmqctl', ['-n', this.node, ...args]);
  }

  /** Start the node (its data directory, hence its durable streams, is kept) and wait until AMQP answers. */
  async startNode(): Promise<void> {
    await this.exec('rabbitmq-server', ['-detached']);
    await this.ready();
  }

  /** Stop the whole node (the Erlang VM exits). */
  async stopNode(): Promise<void> {
    await this.ctl('stop').catch(() => undefined);
    await waitFor(`RabbitMQ node ${this.node} to stop listening`, async () => !(await this.answers()), 60_000, 200);
  }

  /** `rabbitmqctl stop_app`: the RabbitMQ application stops, the VM stays. */
  async stopApp(): Promise<void> {
    await this.ctl('stop_app');
    await waitFor(`RabbitMQ on ${this.port} to stop answering`, async () => !(await this.answers()), 60_000, 200);
  }

  async startApp(): Promise<void> {
    await this.ctl('start_app');
    await this.ready();
  }

  async ready(): Promise<void> {
    await waitFor(`RabbitMQ node ${this.node} to accept AMQP connections on ${this.port}`, () => this.answers(), 120_000, 300);
  }

  async answers(): Promise<boolean> {
    try {
      const c = await amqp.connect(this.url);
      await c.close();
      return true;
    } catch {
      return false;
    }
  }

  async destroy(): Promise<void> {
    await this.ctl('stop').catch(() => undefined);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface Crash {
  proc: 'capture' | 'apply';
  exit: string;
  /** Seconds since the supervisor started. */
  at: number;
  /** The process had not yet said it was running (it died while starting). */
  starting: boolean;
  /** The end of the process's output: why it died. */
  tail: string;
}

const RUNNING = /pgferry (is running|worker running)/;

/**
 * What a service manager (systemd Restart=always, a Kubernetes Deployment)
 * does for pgferry's processes, so a fault that kills one still gets its
 * audit: every 250 ms, a capture or apply process that has exited is noted
 * (exit code/signal, the end of its output) and started again with the same
 * arguments (apply first, as FaultWorld.start does). A test asserts
 * `crashes` is empty: a pgferry process is expected to ride out the faults of
 * this suite, and a crash is a finding, not part of the fault.
 */
export class Supervisor {
  readonly crashes: Crash[] = [];
  readonly errors: string[] = [];
  private readonly startedAt = Date.now();
  private timer: NodeJS.Timeout | null = null;
  private restarting: Promise<void> | null = null;
  private readonly noted = new Set<Proc>();

  constructor(private readonly f: FaultWorld) {}

  start(): this {
    this.timer = setInterval(() => this.check(), 250);
    return this;
  }

  private since(): number {
    return (Date.now() - this.startedAt) / 1000;
  }

  private check(): void {
    if (this.restarting) return;
    const dead = (['apply', 'capture'] as const).filter((k) => {
      const p = this.f[k];
      return p && (p.child.exitCode !== null || p.child.signalCode !== null);
    });
    if (!dead.length) return;
    let quick = false;
    for (const k of dead) {
      const p = this.f[k]!;
      if (this.noted.has(p)) continue;
      this.noted.add(p);
      const starting = !RUNNING.test(p.output());
      quick ||= starting;
      this.crashes.push({ proc: k, exit: String(p.child.signalCode ?? p.child.exitCode), at: this.since(), starting, tail: p.output().slice(-2500) });
    }
    this.restarting = (async () => {
      if (quick) await new Promise((r) => setTimeout(r, 2000)); // it died while starting: do not restart it in a tight loop
      for (const k of dead) await this.restart(k);
    })()
      .catch((err) => void this.errors.push(`+${this.since().toFixed(0)} s: ${(err as Error).message.split('\n')[0]}`))
      .finally(() => (this.restarting = null));
  }

  /** Start process k again; it is this.f[k] at once, so if it dies while starting the next check notes it. */
  private async restart(k: 'capture' | 'apply'): Promise<void> {
    const args = k === 'apply' ? upArgs(this.f.w, ['--queues', 'apply']) : this.f.captureArgs();
    const p = startCli(args, this.f.w.env);
    this.f[k] = p;
    await waitFor(
      `restarted ${k} to report it is running`,
      () => p.child.exitCode !== null || p.child.signalCode !== null || RUNNING.test(p.output()),
      120_000,
      200,
    );
  }

  /** Stop watching (after waiting for a restart in progress). */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.restarting;
  }

  /** One line per crash, for a fault row and an assertion message. */
  summary(): string {
    return this.crashes
      .map((c) => {
        const why = /^(\w*Error|error): .*$/m.exec(c.tail)?.[0] ?? c.tail.trim().split('\n').slice(-3).join(' | ');
        return `${c.proc} exited (${c.exit}) at +${c.at.toFixed(0)} s${c.starting ? ' while starting' : ''}: ${why}`;
      })
      .concat(this.errors.map((e) => `restart failed ${e}`))
      .join('\n');
  }
}

/** After an infrastructure fault: wait until `pgferry status --json` shows replicas a and b running (and, if asked, no longer retrying anything). */
export async function waitForReplicasRunning(f: FaultWorld, opts: { settled?: boolean } = {}) {
  return waitFor(
    'pgferry status --json to show replicas a and b running',
    async () => {
      const r = await cli(f.w, ['status', '--json']);
      const s = JSON.parse(r.stdout) as { replicas: { replica: string; state: string; retrying: string | null }[] };
      const mine = REPLICAS.map((n) => s.replicas.find((x) => x.replica === n));
      return mine.every((x) => x?.state === 'running' && (!opts.settled || !x.retrying)) ? s : null;
    },
    120_000,
    1000,
  );
}
