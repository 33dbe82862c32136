/** CLI connection options come from the settings table (src/settings.ts): each flag shows its variable and default in --help, and parses as before. */
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { connectionOptions } from '../../src/cli/command';
import { SETTINGS } from '../../src/settings';

describe('connection options', () => {
  const cmd = connectionOptions(new Command('x').exitOverride());
  const help = cmd.helpInformation();

  it.each(SETTINGS.filter((s) => 'flag' in s && s.flag && s.path !== 'replicas[].url').map((s) => [s.file, s] as const))('%s: flag, variable and default in --help', (_file, s) => {
    const flag = `--${(s as { flag: string }).flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    expect(help).toContain(flag);
    if ('env' in s && s.env) expect(help).toContain(s.env);
    if ('default' in s && s.default !== undefined) expect(help).toContain(`default ${s.default}`);
  });

  it('parses the flags into the names loadConfig reads, --replica repeatable', () => {
    cmd.parse(['--source', 'postgres://s/db', '--source-name', 'main', '--replica', 'a=postgres://a/db', '--replica', 'b=postgres://b/db', '--wait', '5', '--metrics-port', '0'], { from: 'user' });
    expect(cmd.opts()).toMatchObject({ source: 'postgres://s/db', sourceName: 'main', replica: ['a=postgres://a/db', 'b=postgres://b/db'], wait: '5', metricsPort: '0' });
  });
});
