/**
 * `pgferry uninstall`: remove from a source everything pgferry installed, in
 * either mode (a source may hold what both installed, if its mode changed):
 * the replication slot and the publication; the capture triggers and the
 * pgferry schema. Says what it removed. Refuses while a capture still holds
 * the slot.
 */
import { withClient } from '../pg';
import { ALL_CAPTURE_MODES } from './mode';

export async function uninstallSource(url: string, source: string): Promise<string[]> {
  return withClient(`source '${source}'`, url, async (c) => {
    const removed: string[] = [];
    for (const mode of ALL_CAPTURE_MODES) removed.push(...(await mode.uninstall(c, source)));
    return removed;
  });
}
