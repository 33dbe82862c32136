import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/procs';
import { freePort } from '../helpers/ports';

/** The CLI surface: help everywhere, one-line errors and meaningful exit codes without any server. */
const COMMANDS = [[], ['up'], ['worker'], ['replica'], ['replica', 'list'], ['replica', 'status'], ['replica', 'pause'], ['replica', 'resume'], ['capture'], ['capture', 'status']];

describe('pgferry CLI', () => {
  it.each(COMMANDS.map((c) => [c.join(' ') || '(top level)', c]))('%s --help', async (_, cmd) => {
    const r = await runCli([...(cmd as string[]), '--help'], {});
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: pgferry/);
  });

  it('status commands say which Temporal they could not reach and how to fix it (exit 3)', async () => {
    const port = await freePort();
    for (const cmd of [['replica', 'status'], ['replica', 'list', '--json'], ['capture', 'status'], ['replica', 'pause', 'a']]) {
      const r = await runCli(cmd, { TEMPORAL_ADDRESS: `127.0.0.1:${port}` });
      expect(r.code, cmd.join(' ')).toBe(3);
      const lines = r.stderr.split('\n').filter(Boolean);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(`^pgferry: Temporal at 127\\.0\\.0\\.1:${port}: cannot connect .*; is pgferry up running\\? \\(or set TEMPORAL_ADDRESS`));
    }
  });

  it('an unknown command or option is a usage error (exit 2)', async () => {
    expect((await runCli(['replica', 'explode'], {})).code).toBe(2);
    expect((await runCli(['up', '--frobnicate'], {})).code).toBe(2);
  });
});
