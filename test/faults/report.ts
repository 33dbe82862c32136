import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Global setup of the fault suite: starts an empty results file; at the end,
 * prints the fault table (fault, lost, duplicated, converged in s, outcome)
 * and writes it to test/faults/results/latest.{md,json}.
 */
export const RESULTS_DIR = path.join(__dirname, 'results');
export const RESULTS_LOG = path.join(RESULTS_DIR, 'run.jsonl');

/** This run's rows: a file of its own, so runs at the same time do not mix their rows. */
export const resultsLog = () => process.env.PGFERRY_FAULT_LOG ?? RESULTS_LOG;

export function setup(): void {
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  process.env.PGFERRY_FAULT_LOG = path.join(RESULTS_DIR, `run-${process.pid}.jsonl`);
  fs.writeFileSync(resultsLog(), '');
}

export function teardown(): void {
  const log = resultsLog();
  const text = fs.readFileSync(log, 'utf8');
  fs.rmSync(log, { force: true });
  const rows = text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { n: number; fault: string; lost: number | null; duplicated: number | null; convergedSeconds: number | null; outcome: string; transactions: number | null })
    .sort((a, b) => a.n - b.n);
  if (!rows.length) return;
  const md = [
    `# pgferry fault matrix`,
    '',
    `${new Date().toISOString()} — \`npm run test:faults\``,
    '',
    '| # | fault | source txns | lost | duplicated | converged (s) | outcome |',
    '| ---: | --- | ---: | ---: | ---: | ---: | --- |',
    ...rows.map((r) => `| ${r.n} | ${r.fault} | ${r.transactions ?? '—'} | ${r.lost ?? '—'} | ${r.duplicated ?? '—'} | ${r.convergedSeconds?.toFixed(1) ?? '—'} | ${r.outcome} |`),
    '',
  ].join('\n');
  fs.writeFileSync(path.join(RESULTS_DIR, 'latest.md'), md);
  fs.writeFileSync(path.join(RESULTS_DIR, 'latest.json'), `${JSON.stringify(rows, null, 2)}\n`);
  process.stdout.write(`\n${md}\n`);
}
