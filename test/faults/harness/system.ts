/**
 * The system under test, as the fault suite runs it: a source with the audit
 * workload's tables replicated to replicas a and b by pgferry split in two
 * processes (capture and apply) on a Temporal dev server (FaultWorld); a
 * RabbitMQ node of the test's own that can be stopped without disturbing
 * other tests (PrivateRabbit); and a service manager that restarts a
 * pgferry process that died (Supervisor).
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as amqp from 'amqplib';
import { expect } from 'vitest';
import { createWorld, startUp, upArgs, waitForEqual, World } from '../../helpers/fixture';
import { freePort } from '../../helpers/ports';
import { startCli, Proc } from '../../helpers/procs';
import { waitFor } from '../../helpers/wait';
import { AUDIT_SCHEMA, AUDIT_TABLES, Workload } from '../../helpers/workload';
import { auditReplicas } from './audit';
import { FaultRow, record } from './rows';

/**
 * The fault suite's world: a source with the audit workload's tables (every
 * source transaction inserts one audit row with a unique id), two replicas a
 * and b, and pgferry split in two processes — capture (`worker --queues
 * capture`) and apply (`up --queues apply`) — so a fault can hit either.
 *
 * A fault test: `const load = f.load(); …inject…; await f.settle(load, …)`.
 * settle stops the workload, waits until both replicas equal the source, and
 * audits them: lost = source transaction ids missing on the replica,
 * duplicated = audit rows on the replica beyond one per id. The result is
 * asserted (0 and 0) and recorded for the suite's table.
 */
export const REPLICAS = ['a', 'b'];

export class FaultWorld {
  capture: Proc | null = null;
  apply: Proc | null = null;

  private constructor(readonly w: World) {}

  static async create(opts: { schema?: string; env?: NodeJS.ProcessEnv } = {}): Promise<FaultWorld> {
    const w = await createWorld({ replicas: REPLICAS, schema: AUDIT_SCHEMA + (opts.schema ?? '') });
    Object.assign(w.env, opts.env ?? {});
    return new FaultWorld(w);
  }

  captureArgs(): string[] {
    return ['worker', '--queues', 'capture', '--source', this.w.sourceUrl];
  }

  async startCapture(env: NodeJS.ProcessEnv = {}): Promise<Proc> {
    this.capture = await startUp(this.w, this.captureArgs(), env);
    return this.capture;
  }

  async startApply(env: NodeJS.ProcessEnv = {}): Promise<Proc> {
    this.apply = await startUp(this.w, upArgs(this.w, ['--queues', 'apply']), env);
    return this.apply;
  }

  /** Both processes, apply first (up prepares the source and starts every workflow). */
  async start(env: NodeJS.ProcessEnv = {}): Promise<void> {
    if (!this.apply || this.apply.child.exitCode !== null || this.apply.child.signalCode !== null) await this.startApply(env);
    if (!this.capture || this.capture.child.exitCode !== null || this.capture.child.signalCode !== null) await this.startCapture(env);
  }

  /** A running workload; `sleepMs` between transactions (0: as fast as one connection goes). */
  load(sleepMs = 2, opts: { reconnect?: boolean } = {}): Workload {
    const load = new Workload(this.w.sourceUrl, sleepMs, opts);
    load.start();
    return load;
  }

  /** The workload the infrastructure faults run under: reconnecting, 300 transactions in, both replicas applying. */
  async steadyLoad(): Promise<Workload> {
    const load = this.load(2, { reconnect: true });
    await this.more(load, 300);
    await Promise.all(REPLICAS.map((r) => this.applied(r, 100)));
    return load;
  }

  /** Wait until the workload has committed `more` transactions beyond now. */
  async more(load: Workload, more: number, timeoutMs = 60_000): Promise<void> {
    const target = load.committed + more;
    await waitFor(`${more} more source transactions`, () => load.committed >= target, timeoutMs, 50);
  }

  /** Wait until replica r has applied at least `txns` transactions in all (pgferry.progress). */
  async applied(replica: string, txns: number, timeoutMs = 120_000): Promise<void> {
    await waitFor(`replica ${replica} to apply ${txns} transactions`, async () => {
      const r = await this.w.replicas.withClient(`replica_${replica}`, (c) =>
        c.query(`SELECT coalesce(sum(txns_applied), 0)::bigint AS n FROM pgferry.progress`).catch(() => ({ rows: [{ n: 0 }] })),
      );
      return Number(r.rows[0].n) >= txns;
    }, timeoutMs, 200);
  }

  /**
   * Stop the workload, wait for both replicas to equal the source, audit them,
   * assert nothing lost or duplicated, and record the row for the table.
   */
  async settle(load: Workload | null, result: { n: number; fault: string; t0?: number; replicas?: string[] }, timeoutMs = 300_000): Promise<FaultRow> {
    const transactions = load ? await load.stop() : null;
    const stoppedAt = Date.now();
    const replicas = result.replicas ?? REPLICAS;
    await Promise.all(replicas.map((r) => waitForEqual(this.w, r, AUDIT_TABLES, timeoutMs)));
    const convergedSeconds = (Date.now() - (result.t0 ?? stoppedAt)) / 1000;
    const { lost, duplicated } = await auditReplicas(this.w, replicas);
    const row: FaultRow = { n: result.n, fault: result.fault, transactions, lost, duplicated, convergedSeconds, outcome: lost === 0 && duplicated === 0 ? 'replicas equal the source' : 'AUDIT FAILED' };
    record(row);
    expect({ lost, duplicated }, `${result.fault}: audit of replicas ${replicas.join(', ')}`).toEqual({ lost: 0, duplicated: 0 });
    return row;
  }

  async teardown(): Promise<void> {
    for (const p of [this.capture, this.apply]) await p?.stop();
    await this.w.teardown();
  }
}

const run = promisify(execFile);

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
