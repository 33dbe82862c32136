import { describe, expect, it } from 'vitest';
import { recordScrape, registry } from '../../src/metrics/instruments';
import type { CaptureView, SubscriberView } from '../../src/temporal/inspect';

/**
 * What one scrape's reading becomes in the exposition: subscribers like
 * replicas (a state series per state, `not answering` as not_answering with
 * source "unknown"), the capture's heartbeat age; and nothing of a previous
 * scrape survives one that no longer sees it.
 */
const capture: CaptureView = {
  source: 'main', state: 'running', confirmedLsn: '0/100', lastCommitTime: null, txns: 5, changes: 9, runs: 0, lastError: null,
  updatedAt: '2026-12-06T00:00:00Z', live: null, retrying: null, heartbeatAgeSeconds: 1.5,
};
const sub = (name: string, state: SubscriberView['state'], source: string | null, txns = 0): SubscriberView => ({
  subscriber: name, source, state, lsn: null, offset: null, lastCommitTime: null, caughtUp: false, txns, changes: 0, batches: 0,
  lastError: null, updatedAt: '2026-12-06T00:00:00Z', lagBytes: null, lagSeconds: state === 'running' ? 0.5 : null, retrying: null,
});

describe('scrape-time metrics', () => {
  it('exports subscribers and the capture heartbeat age, and forgets what the next scrape does not see', async () => {
    recordScrape({ source: 'main', temporal: { ok: true, capture, views: [], subscribers: [sub('audit', 'failed', 'main', 7), sub('mailer', 'not answering', null), sub('search', 'running', 'main', 3)] } });
    const text = await registry.metrics();
    expect(text).toContain('pgferry_subscriber_state{subscriber="audit",source="main",state="failed"} 1');
    expect(text).toContain('pgferry_subscriber_state{subscriber="audit",source="main",state="running"} 0');
    expect(text).toContain('pgferry_subscriber_state{subscriber="mailer",source="unknown",state="not_answering"} 1');
    expect(text).toContain('pgferry_subscriber_transactions_total{subscriber="audit",source="main"} 7');
    expect(text).toContain('pgferry_subscriber_lag_seconds{subscriber="search",source="main"} 0.5');
    expect(text).not.toMatch(/pgferry_subscriber_lag_seconds\{subscriber="audit"/);
    expect(text).toContain('pgferry_capture_heartbeat_age_seconds{source="main"} 1.5');
    expect(text).toContain('pgferry_capture_state{source="main",state="stopped"} 0');

    recordScrape({ source: 'main', temporal: { ok: true, capture: { ...capture, heartbeatAgeSeconds: null }, views: [], subscribers: [] } });
    const after = await registry.metrics();
    expect(after).not.toContain('pgferry_subscriber_state{');
    expect(after).not.toContain('pgferry_capture_heartbeat_age_seconds{');
  });
});
