/**
 * Each warning is printed once per process. `pgferry up` finds the same
 * problems twice — init checks the replicas, then each replica workflow's
 * check (prepareReplica) runs in the same process — and a newcomer should
 * read each of them once, in the command's own output.
 */
const printed = new Set<string>();

/** True the first time this process is about to print `warning`; false after. */
export function firstTime(warning: string): boolean {
  if (printed.has(warning)) return false;
  printed.add(warning);
  return true;
}
