import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { AckTracker, TrackedTxn } from '../../src/capture/wal/ack-tracker';
import { compareLsn, formatLsn, parseLsn } from '../../src/lsn';

/**
 * Capture's acknowledgement bookkeeping as a property: whatever the order of
 * begins, publishes, confirms (in order, as RabbitMQ sends them, or any
 * order, or several transactions' messages at once as a run's confirm), nacks, commits and keepalives, the position the slot may be
 * acknowledged with never passes the commit of a transaction whose messages
 * RabbitMQ has not all confirmed; it never goes back; and once everything is
 * confirmed it reaches the last commit's end.
 */
const RUNS = Number(process.env.PGFERRY_PROPERTY_RUNS ?? 3000);

interface Txn {
  lsn: string;
  endLsn: string;
  messages: number;
}

type Event = { kind: 'confirm'; pick: number } | { kind: 'confirmRun'; count: number } | { kind: 'keepalive' } | { kind: 'decode' } | { kind: 'nack'; pick: number };

const scenario = fc.record({
  txns: fc.array(fc.record({ messages: fc.nat({ max: 4 }), gap: fc.integer({ min: 1, max: 500 }) }), { minLength: 1, maxLength: 25 }),
  events: fc.array(
    fc.oneof(
      { weight: 5, arbitrary: fc.record({ kind: fc.constant('confirm' as const), pick: fc.nat() }) },
      // A run's one confirm: the messages of several transactions held together, confirmed at once (changelog/runs.ts).
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('confirmRun' as const), count: fc.integer({ min: 2, max: 8 }) }) },
      { weight: 4, arbitrary: fc.constant({ kind: 'decode' as const }) },
      { weight: 1, arbitrary: fc.constant({ kind: 'keepalive' as const }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('nack' as const), pick: fc.nat() }) },
    ),
    { maxLength: 200 },
  ),
  inOrder: fc.boolean(),
  nacks: fc.boolean(),
});

describe('the ack tracker (property)', () => {
  it('never acknowledges past a transaction RabbitMQ has not confirmed whole', () => {
    fc.assert(
      fc.property(scenario, ({ txns: shape, events, inOrder, nacks }) => {
        let at = 0x1000n;
        const txns: Txn[] = shape.map((t) => {
          at += BigInt(t.gap) * 16n;
          const lsn = formatLsn(at);
          at += 8n;
          return { lsn, endLsn: formatLsn(at), messages: t.messages };
        });
        const start = formatLsn(0x1000n);
        const tracker = new AckTracker(start);
        // Decoding runs in source order: BEGIN, the messages, COMMIT, one step at a time.
        const steps: ({ kind: 'begin' | 'commit'; i: number } | { kind: 'publish'; i: number })[] = [];
        txns.forEach((t, i) => {
          steps.push({ kind: 'begin', i });
          for (let k = 0; k < t.messages; k += 1) steps.push({ kind: 'publish', i });
          steps.push({ kind: 'commit', i });
        });
        const handles: TrackedTxn[] = [];
        const unconfirmed = new Map<number, number>(); // txn → messages published, not confirmed
        const inflight: number[] = []; // txn of each unconfirmed message, in publish order
        const nacked = new Set<number>();
        let begun = 0;
        let next = 0;
        let last = start;

        const check = (what: string) => {
          const pos = tracker.position;
          expect(compareLsn(pos, last), `${what}: the position went back`).toBeGreaterThanOrEqual(0);
          last = pos;
          for (let i = 0; i < begun; i += 1) {
            if ((unconfirmed.get(i) ?? 0) > 0 || nacked.has(i) || !committed.has(i)) {
              expect(compareLsn(pos, txns[i].lsn), `${what}: position ${pos} passed ${txns[i].lsn}, not confirmed`).toBeLessThan(0);
            }
          }
        };
        const committed = new Set<number>();
        const decode = () => {
          const s = steps[next++];
          if (!s) return;
          if (s.kind === 'begin') {
            handles[s.i] = tracker.begin();
            begun = s.i + 1;
          } else if (s.kind === 'publish') {
            tracker.published(handles[s.i]);
            unconfirmed.set(s.i, (unconfirmed.get(s.i) ?? 0) + 1);
            inflight.push(s.i);
          } else {
            const t = txns[s.i];
            tracker.commit(handles[s.i], { lsn: t.lsn, endLsn: t.endLsn, commitTime: '', changes: t.messages });
            committed.add(s.i);
          }
        };
        const settle = (k: number, ok: boolean) => {
          const i = inflight.splice(k, 1)[0];
          unconfirmed.set(i, unconfirmed.get(i)! - 1);
          if (ok) tracker.confirmed(handles[i]);
          else {
            nacked.add(i);
            tracker.nack();
          }
        };
        for (const e of events) {
          if (e.kind === 'decode') decode();
          else if (e.kind === 'confirmRun') for (let k = 0; k < e.count && inflight.length; k += 1) settle(0, true);
          else if ((e.kind === 'confirm' || (e.kind === 'nack' && nacks)) && inflight.length) {
            settle(inOrder ? 0 : e.pick % inflight.length, e.kind === 'confirm');
          } else if (e.kind === 'keepalive') {
            // The server has sent everything before its keepalive position: at most just before the next commit not yet decoded.
            const s = steps[next];
            const bound = s ? txns[s.i].lsn : formatLsn(at + 64n);
            const nothingOpen = !s || s.kind === 'begin';
            if (nothingOpen) tracker.keepalive(formatLsn(parseLsn(bound) - 1n));
          }
          check(e.kind);
        }
        // Then everything runs to the end: every message confirmed.
        while (next < steps.length) decode();
        while (inflight.length) settle(0, true);
        check('end');
        if (!nacked.size) expect(compareLsn(tracker.position, txns[txns.length - 1].endLsn), 'released everything once all was confirmed').toBeGreaterThanOrEqual(0);
        else expect(compareLsn(tracker.position, txns[Math.min(...nacked)].lsn)).toBeLessThan(0);
      }),
      { numRuns: RUNS },
    );
  });
});

