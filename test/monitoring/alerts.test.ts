/**
 * The alerting rules, the Prometheus configuration and the Grafana dashboard
 * that ship in src/metrics/monitoring: checked and unit-tested with promtool
 * (Debian's prometheus package, installed by npm run setup), and every pgferry
 * metric they name is one that pgferry exports (a renamed metric would leave
 * an alert that can never fire).
 */
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { registry } from '../../src/metrics/instruments';

const DIR = path.resolve(__dirname, '../../src/metrics/monitoring');

function promtool(...args: string[]): string {
  try {
    return execFileSync('promtool', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { code?: string; stdout?: string; stderr?: string };
    if (e.code === 'ENOENT') throw new Error('promtool not found: run npm run setup (it installs Debian\'s prometheus package)');
    throw new Error(`promtool ${args.join(' ')} failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

/** pgferry_* names used in PromQL, with a histogram's series suffixes taken off. */
function metricNames(text: string): string[] {
  const names = new Set([...text.matchAll(/\bpgferry_[a-z_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, '')));
  return [...names].sort();
}

describe('monitoring that ships (src/metrics/monitoring)', () => {
  it('promtool checks the alerting rules and the Prometheus configuration', () => {
    expect(promtool('check', 'rules', path.join(DIR, 'alerts.yml'))).toMatch(/SUCCESS: 10 rules found/);
    expect(promtool('check', 'config', path.join(DIR, 'prometheus.yml'))).toMatch(/is valid prometheus config file/);
  });

  it('promtool test rules: each alert fires on what should wake someone and stays quiet when healthy', () => {
    const out = promtool('test', 'rules', path.resolve(__dirname, 'alerts.promtool.yml'));
    expect(out).toMatch(/SUCCESS/);
    // Every alert has a test that fires it and one that keeps it quiet.
    const rules = (parseYaml(fs.readFileSync(path.join(DIR, 'alerts.yml'), 'utf8')) as { groups: { rules: { alert: string }[] }[] }).groups.flatMap((g) => g.rules.map((r) => r.alert));
    const tests = parseYaml(fs.readFileSync(path.resolve(__dirname, 'alerts.promtool.yml'), 'utf8')) as { tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[] };
    const cases = tests.tests.flatMap((t) => t.alert_rule_test);
    for (const alert of rules) {
      expect(cases.some((c) => c.alertname === alert && c.exp_alerts.length > 0), `${alert} fires in some test`).toBe(true);
      expect(cases.some((c) => c.alertname === alert && c.exp_alerts.length === 0), `${alert} is quiet in some test`).toBe(true);
    }
  });

  it('the rules and the dashboard name only metrics pgferry exports', async () => {
    const exported = new Set((await registry.getMetricsAsJSON()).map((m) => m.name));
    const alerts = metricNames(fs.readFileSync(path.join(DIR, 'alerts.yml'), 'utf8'));
    const dashboardText = fs.readFileSync(path.join(DIR, 'grafana-dashboard.json'), 'utf8');
    const dashboard = JSON.parse(dashboardText) as { panels: { type: string; targets?: { expr: string }[] }[] };
    const queries = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    expect(queries.length).toBeGreaterThan(10);
    const used = metricNames(queries.join('\n'));
    expect(alerts.filter((n) => !exported.has(n))).toEqual([]);
    expect(used.filter((n) => !exported.has(n))).toEqual([]);
    // The dashboard covers replicas, capture and subscribers.
    for (const m of ['pgferry_replica_state', 'pgferry_replica_lag_seconds', 'pgferry_capture_state', 'pgferry_slot_wal_retained_bytes', 'pgferry_subscriber_state']) expect(used).toContain(m);
  });
});
