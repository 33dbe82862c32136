/**
 * Pure, deterministic arithmetic behind what the replica workflow shows: its
 * apply rate (status query) and its lag (search attribute). Times are workflow
 * times in ms (Date.now() inside a workflow), so replay computes the same.
 */

/** Changes applied, in 1-second buckets, over the last RATE_WINDOW_MS. Carried across continue-as-new. */
export interface RateWindow {
  /** When measuring started (the start of the first batch counted); null: nothing measured yet. */
  since: number | null;
  /** [bucket start (ms, a whole second), changes applied in that second]; oldest first. */
  buckets: [number, number][];
}

export const RATE_WINDOW_MS = 60_000;

export const emptyRateWindow = (): RateWindow => ({ since: null, buckets: [] });

/** Count a batch that started at `startedAt` and returned at `now` having applied `changes`. */
export function addBatch(w: RateWindow, startedAt: number, now: number, changes: number): RateWindow {
  const second = Math.floor(now / 1000) * 1000;
  const buckets = w.buckets.filter(([t]) => t > now - RATE_WINDOW_MS).map(([t, n]): [number, number] => [t, n]);
  const last = buckets[buckets.length - 1];
  if (last && last[0] === second) last[1] += changes;
  else buckets.push([second, changes]);
  return { since: w.since ?? startedAt, buckets };
}

/** Changes per second over the last minute (or since measuring started, if less), one decimal. */
export function ratePerSecond(w: RateWindow, now: number): number {
  if (w.since === null) return 0;
  const from = Math.max(w.since, now - RATE_WINDOW_MS);
  const seconds = Math.max(1, (now - from) / 1000);
  const changes = w.buckets.filter(([t]) => t > now - RATE_WINDOW_MS).reduce((sum, [, n]) => sum + n, 0);
  return Math.round((changes / seconds) * 10) / 10;
}

/**
 * Lag for the PgferryLagSeconds attribute: 0 when the batch found nothing more
 * waiting (or the replica is under a second behind), else how long ago the
 * last applied transaction committed on the source, one decimal. Undefined when
 * unknown (nothing applied yet and not caught up).
 */
export function lagSeconds(caughtUp: boolean, lastCommitTime: string | null, now: number): number | undefined {
  if (caughtUp) return 0;
  if (!lastCommitTime) return undefined;
  const committed = Date.parse(lastCommitTime);
  if (Number.isNaN(committed)) return undefined;
  const lag = (now - committed) / 1000;
  return lag < 1 ? 0 : Math.round(lag * 10) / 10;
}

/** Upper bounds (s) of the lag buckets; a lag-only search attribute update is made when the bucket changes. */
const LAG_BUCKETS = [1, 5, 15, 60, 300, 900, 3600, 3 * 3600, 12 * 3600, 24 * 3600];

export function lagBucket(seconds: number): number {
  const i = LAG_BUCKETS.findIndex((b) => seconds < b);
  return i === -1 ? LAG_BUCKETS.length : i;
}

/** At most one lag-only search attribute update per this much workflow time (state changes carry the lag too). */
export const LAG_UPDATE_MIN_MS = 10_000;

/**
 * Whether a new lag is worth a search attribute update (one history event):
 * only when it moves to another bucket (under 1 s, 1–5 s, 5–15 s, 15–60 s,
 * 1–5 min, …) and the last lag-only update is LAG_UPDATE_MIN_MS old. A replica
 * at a steady lag, or one that stays caught up, adds nothing to its history.
 */
export function lagWorthShowing(shown: number | undefined, next: number, msSinceLastUpdate: number): boolean {
  if (shown === undefined) return true;
  if (lagBucket(shown) === lagBucket(next)) return false;
  return msSinceLastUpdate >= LAG_UPDATE_MIN_MS;
}
