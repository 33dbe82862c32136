/**
 * Reporting: the rows of the fault suite's results table (written to this
 * run's log, printed and saved by test/faults/report.ts at the end), a row
 * for a fault that could not be produced, and a helper that shortens an
 * error quoted in an outcome.
 */
import * as fs from 'node:fs';
import { resultsLog } from '../report';

export interface FaultRow {
  n: number;
  fault: string;
  transactions: number | null;
  lost: number | null;
  duplicated: number | null;
  /** From the fault (or the end of the load) until both replicas equal the source. */
  convergedSeconds: number | null;
  outcome: string;
}

/** Add a row to the suite's table (for faults whose outcome is a state, not an audit, too). */
export function record(row: FaultRow): void {
  fs.appendFileSync(resultsLog(), `${JSON.stringify(row)}\n`);
}

/**
 * `record` (the suite's table), and the row on this run's output too: the
 * table's log is shared by every fault run on the machine.
 */
export function recordRow(row: FaultRow): void {
  record(row);
  console.log(`fault row: ${JSON.stringify(row)}`);
}

/** A row for a fault that could not be produced here, with the reason. */
export function recordNotProduced(n: number, fault: string, why: string): void {
  recordRow({ n, fault, transactions: null, lost: null, duplicated: null, convergedSeconds: null, outcome: `NOT PRODUCED: ${why}` });
}

/** One line, at most `max` characters: for outcomes quoting an error. */
export function short(s: string | null | undefined, max = 160): string {
  const one = String(s ?? '').replace(/\s+/g, ' ').trim();
  return one.length > max ? `${one.slice(0, max - 1)}…` : one;
}
