import * as fs from 'node:fs';
import amqp from 'amqplib';
import { describe, expect, it } from 'vitest';
import { runCli, startCli } from '../helpers/procs';
import { RABBIT_URL } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';

/**
 * `pgferry demo`, as a newcomer runs it after setup: it starts everything,
 * says where to watch (and the status command it prints works), replicates a
 * live workload, checks both replicas against the source, and removes all it
 * created — and prints no warning: nothing a newcomer did is wrong.
 */
describe('pgferry demo', () => {
  it('runs, prints where to watch, ends with both replicas equal to the source, and cleans up', async () => {
    // No PGFERRY_* of the test environment may leak into the demo: it must ignore them anyway.
    const demo = startCli(['demo', '--duration', '25', '--rate', '10'], { PGFERRY_SOURCE: 'postgres://must-not-be-used.invalid/x', PGFERRY_REPLICAS: 'x=postgres://nope.invalid/x' });
    const configFile = await waitFor(
      'the demo to say it is running',
      async () => {
        if (demo.child.exitCode !== null) throw new Error(`demo exited with ${demo.child.exitCode}:\n${demo.output()}`);
        return /npx pgferry --config (\S+) status --watch/.exec(demo.output())?.[1] ?? null;
      },
      180_000,
    );
    const out = demo.output();
    expect(out).toMatch(/pgferry demo is running: source 'demo_[0-9a-f]{6}' → replicas a, b/);
    expect(out).toMatch(/Temporal Web UI: http:\/\/127\.0\.0\.1:\d+\/namespaces\/default\/workflows/);
    const source = /source '(demo_[0-9a-f]{6})'/.exec(out)![1];

    // The status command it prints works while the demo runs.
    const status = await waitFor('the printed status command to show both replicas running', async () => {
      const r = await runCli(['--config', configFile, 'status', '--json'], {});
      const report = r.code === 0 ? JSON.parse(r.stdout) : null;
      return report?.replicas.length === 2 && report.replicas.every((v: { state: string; txns: number }) => v.state === 'running' && v.txns > 0) ? report : null;
    });
    expect(status.sources[0].source).toBe(source);

    const code = await new Promise<number | null>((resolve) => {
      if (demo.child.exitCode !== null) resolve(demo.child.exitCode);
      else demo.child.once('exit', (c) => resolve(c));
    });
    const all = demo.output();
    expect(code, all).toBe(0);
    expect(all).toMatch(/replica a: equal to the source \(public\.customers \d+ rows, public\.orders \d+ rows\) after \d+ demo transactions/);
    expect(all).toMatch(/replica b: equal to the source/);
    expect(all).toContain('demo removed.');
    expect(all).not.toContain('must-not-be-used');
    // A quiet first contact (issue 28): no warning at all, in text or as a log line (pino's level 40 and up).
    expect(all).not.toMatch(/WARN/i);
    expect(all).not.toMatch(/"level":(40|50|60)/);
    expect(fs.existsSync(configFile)).toBe(false);
    // Its change stream is gone from RabbitMQ.
    const conn = await amqp.connect(RABBIT_URL);
    try {
      const ch = await conn.createChannel();
      ch.on('error', () => undefined);
      await expect(ch.checkQueue(`pgferry.${source}.changes`)).rejects.toThrow(/NOT_FOUND/);
    } finally {
      await conn.close().catch(() => undefined);
    }
  }, 300_000);
});
