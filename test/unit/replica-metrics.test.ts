import { describe, expect, it } from 'vitest';
import { addBatch, emptyRateWindow, lagBucket, lagSeconds, lagWorthShowing, LAG_UPDATE_MIN_MS, ratePerSecond } from '../../workflows/replica-metrics';

const T0 = Date.parse('2026-01-01T00:00:00Z');

describe('rowsPerSecond', () => {
  it('is 0 before any batch, and changes over elapsed time since measuring started', () => {
    expect(ratePerSecond(emptyRateWindow(), T0)).toBe(0);
    let w = addBatch(emptyRateWindow(), T0, T0 + 2000, 400);
    expect(ratePerSecond(w, T0 + 2000)).toBe(200);
    w = addBatch(w, T0 + 2000, T0 + 4000, 0);
    expect(ratePerSecond(w, T0 + 4000)).toBe(100);
  });

  it('counts only about the last minute', () => {
    let w = emptyRateWindow();
    // 6000 changes in the first 10 s, then 50 s idle, then 60 s more idle
    for (let s = 0; s < 10; s++) w = addBatch(w, T0 + s * 1000, T0 + (s + 1) * 1000, 600);
    for (let s = 10; s < 60; s++) w = addBatch(w, T0 + s * 1000, T0 + (s + 1) * 1000, 0);
    expect(ratePerSecond(w, T0 + 61_000)).toBe(5400 / 60); // the first second has left the window
    for (let s = 60; s < 120; s++) w = addBatch(w, T0 + s * 1000, T0 + (s + 1) * 1000, 0);
    expect(ratePerSecond(w, T0 + 121_000)).toBe(0);
    expect(w.buckets.length).toBeLessThanOrEqual(61); // bounded: carried across continue-as-new
  });

  it('merges batches of the same second into one bucket', () => {
    let w = emptyRateWindow();
    for (let i = 0; i < 10; i++) w = addBatch(w, T0 + i * 50, T0 + (i + 1) * 50, 10);
    expect(w.buckets).toEqual([[T0, 100]]);
    expect(ratePerSecond(w, T0 + 500)).toBe(100); // at least one second of span
  });
});

describe('lag for PgferryLagSeconds', () => {
  it('is 0 when caught up or under a second behind, else seconds since the last applied commit', () => {
    expect(lagSeconds(true, '2026-01-01T00:00:00Z', T0 + 99_000)).toBe(0);
    expect(lagSeconds(false, '2026-01-01T00:00:00Z', T0 + 500)).toBe(0);
    expect(lagSeconds(false, '2026-01-01T00:00:00Z', T0 + 12_345)).toBe(12.3);
    expect(lagSeconds(false, null, T0)).toBeUndefined();
  });

  it('is shown again only when it changes bucket, at most every LAG_UPDATE_MIN_MS', () => {
    expect(lagWorthShowing(undefined, 0, 0)).toBe(true);
    expect(lagWorthShowing(0, 0.5, 60_000)).toBe(false); // same bucket (under 1 s)
    expect(lagWorthShowing(2, 4.9, 60_000)).toBe(false); // same bucket (1-5 s)
    expect(lagWorthShowing(2, 7, LAG_UPDATE_MIN_MS - 1)).toBe(false); // too soon
    expect(lagWorthShowing(2, 7, LAG_UPDATE_MIN_MS)).toBe(true);
    expect(lagWorthShowing(700, 0, LAG_UPDATE_MIN_MS)).toBe(true); // caught up again
    expect(lagBucket(0)).toBe(0);
    expect(lagBucket(1)).toBe(1);
    expect(lagBucket(59.9)).toBe(lagBucket(15));
    expect(lagBucket(10 * 24 * 3600)).toBeGreaterThan(lagBucket(24 * 3600 - 1));
  });

  it('adds few history events while a backlog grows and drains', () => {
    // One batch a second; lag grows to an hour then drains to 0: count lag-only updates.
    let shown: number | undefined;
    let shownAt = -Infinity;
    let updates = 0;
    const step = (t: number, lag: number) => {
      if (lagWorthShowing(shown, lag, t - shownAt)) {
        shown = lag;
        shownAt = t;
        updates++;
      }
    };
    let t = 0;
    for (let lag = 0; lag <= 3600; lag++) step((t += 1000), lag);
    for (let lag = 3600; lag >= 0; lag -= 3) step((t += 1000), lag);
    for (let i = 0; i < 15; i++) step((t += 1000), 0); // caught up: batches keep coming
    expect(shown).toBe(0);
    expect(updates).toBeLessThanOrEqual(20);
  });
});
