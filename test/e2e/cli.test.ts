import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/procs';
import { heldClosedPort } from '../helpers/ports';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** The CLI surface: help everywhere, one-line errors and meaningful exit codes without any server. */
const COMMANDS = [[], ['up'], ['config', 'check'], ['status'], ['worker'], ['replica'], ['replica', 'list'], ['replica', 'status'], ['replica', 'pause'], ['replica', 'resume'], ['capture'], ['capture', 'status'], ['tail'], ['subscriber'], ['subscriber', 'status'], ['subscriber', 'pause'], ['subscriber', 'resume']];

describe('pgferry CLI', () => {
  it.each(COMMANDS.map((c) => [c.join(' ') || '(top level)', c]))('%s --help', async (_, cmd) => {
    const r = await runCli([...(cmd as string[]), '--help'], {});
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: pgferry/);
  });

  it('status commands say which Temporal they could not reach and how to fix it (exit 3)', async () => {
    const held = await heldClosedPort(); // refusing throughout: a port found free could be taken before use
    const port = held.port;
    try {
      for (const cmd of [['replica', 'status'], ['replica', 'list', '--json'], ['capture', 'status'], ['replica', 'pause', 'a'], ['subscriber', 'status'], ['subscriber', 'resume', 'a']]) {
        const r = await runCli(cmd, { TEMPORAL_ADDRESS: `127.0.0.1:${port}` });
        expect(r.code, cmd.join(' ')).toBe(3);
        const lines = r.stderr.split('\n').filter(Boolean);
        expect(lines).toHaveLength(1);
        expect(lines[0]).toMatch(new RegExp(`^pgferry: Temporal at 127\\.0\\.0\\.1:${port}: cannot connect .*; is pgferry up running\\? \\(or set temporal\\.address in the config file / TEMPORAL_ADDRESS`));
      }
    } finally {
      await held.release();
    }
  });

  it('tail says which RabbitMQ it could not reach and how to fix it (exit 3)', async () => {
    // Issue 26.11: a port held refusing for the whole test (a port found free could be taken before use), and one
    // whose number holds 403 or 530: "connect ECONNREFUSED 127.0.0.1:40353" once read as AMQP's 403 ACCESS_REFUSED (exit 2).
    for (const digits of ['403', '530']) {
      const held = await heldClosedPort(digits);
      try {
        const r = await runCli(['tail', '--rabbitmq', `amqp://guest:guest@127.0.0.1:${held.port}`], {});
        expect(r.code, `port ${held.port}: ${r.stderr}`).toBe(3);
        expect(r.stderr.trim()).toMatch(new RegExp(`^pgferry: RabbitMQ at amqp://guest:\\*+@127\\.0\\.0\\.1:${held.port}: cannot connect \\(connect ECONNREFUSED 127\\.0\\.0\\.1:${held.port}\\); start RabbitMQ`));
      } finally {
        await held.release();
      }
    }
    const bad = await runCli(['tail', '--from', 'yesterday'], {});
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim()).toBe("pgferry: --from 'yesterday': use now, beginning or an LSN such as 0/16B3748");
  });

  it('an unknown command or option is a usage error (exit 2)', async () => {
    expect((await runCli(['replica', 'explode'], {})).code).toBe(2);
    expect((await runCli(['up', '--frobnicate'], {})).code).toBe(2);
  });

  it('config check validates a file without connecting to anything: exit 0 with passwords masked, exit 2 naming every mistake', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgferry-cli-config-'));
    const good = path.join(dir, 'good.yaml');
    fs.writeFileSync(good, 'sources:\n  - name: shop\n    url: postgres://cap:${SRC_PW}@db.invalid/shop\nreplicas:\n  - { name: dw, url: "postgres://app:hunter2@dw.invalid/dw" }\n');
    const ok = await runCli(['config', 'check', '--config', good], { SRC_PW: 's3cret' });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain(`configuration is valid (${good})`);
    expect(ok.stdout).toContain('postgres://cap:***@db.invalid/shop');
    expect(ok.stdout).not.toMatch(/s3cret|hunter2/);
    const json = await runCli(['--config', good, 'config', 'check', '--json', '--source', 'postgres://flag@other.invalid/x'], { SRC_PW: 's3cret' });
    expect(JSON.parse(json.stdout).config.source).toMatchObject({ name: 'shop', url: 'postgres://flag@other.invalid/x', mode: 'wal' });

    const bad = path.join(dir, 'bad.yaml');
    fs.writeFileSync(bad, 'sources:\n  - { name: shop, url: "mysql://x", mode: logical }\nbatch: { max_changes: 0 }\n');
    const r = await runCli(['config', 'check', '--config', bad], {});
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('3 problems');
    for (const field of ['sources[].url', 'sources[].mode', 'batch.max_changes']) expect(r.stderr).toContain(field);
  });

  it('logs JSON lines when stderr is not a terminal, with passwords masked', async () => {
    const held = await heldClosedPort();
    const r = await runCli(['init', '--source', `postgres://app:hunter2@127.0.0.1:${held.port}/db`, '--wait', '0'], { PGFERRY_LOG_FORMAT: '' }).finally(() => held.release());
    expect(r.code).toBe(3);
    const logLines = r.stderr.split('\n').filter((l) => l.startsWith('{'));
    expect(logLines.length).toBeGreaterThan(0);
    for (const l of logLines) expect(JSON.parse(l)).toHaveProperty('level');
    expect(r.stderr).not.toContain('hunter2');
  });
});
