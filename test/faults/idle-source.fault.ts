import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { slotHealth, SlotHealth } from '../../src/capture/wal/slot-health';
import { compareLsn } from '../../src/lsn';
import { waitFor } from '../helpers/wait';
import { FaultWorld, REPLICAS } from './harness/system';

/**
 * Fault 17: a source with no writes for a long time, then writes. With a 1 s
 * idle heartbeat (PGFERRY_HEARTBEAT_SECONDS=1) the slot's confirmed_flush_lsn
 * keeps advancing while nothing is written, restart_lsn follows (PostgreSQL
 * moves it at the running-xacts records it logs every 15 s) and the WAL the
 * slot retains stays small; the writes after the quiet stretch all arrive.
 */
const IDLE_MS = 20_000;
const RETAINED_LIMIT = 1024 * 1024;

describe('fault 17: idle source, then writes', () => {
  let f: FaultWorld;

  beforeAll(async () => {
    f = await FaultWorld.create({ env: { PGFERRY_HEARTBEAT_SECONDS: '1' } });
    await f.start();
  });

  afterAll(async () => {
    await f?.teardown();
  });

  it('20 s without writes (slot confirmed further, WAL retained bounded), then writes: nothing lost or duplicated', async () => {
    const health = () => slotHealth(f.w.sourceUrl, f.w.sourceName);

    // A burst of writes, fully applied, then nothing.
    const before = f.load(2);
    await f.more(before, 300);
    const burst = await before.stop();
    await Promise.all(REPLICAS.map((r) => f.applied(r, burst)));

    const idleAt = Date.now();
    const first = await health();
    expect(first).toMatchObject({ exists: true, active: true });
    const samples: SlotHealth[] = [first];
    let advances = 0;
    // The idle stretch: at least IDLE_MS, measured by sampling the slot each half second, and until
    // the slot has been confirmed further several times and restart_lsn has moved (it can take one
    // 15 s running-xacts interval after the last write, hence the longer deadline).
    await waitFor(
      `${IDLE_MS / 1000} s of idle source with the slot moving`,
      async () => {
        const h = await health();
        const prev = samples[samples.length - 1];
        if (h.confirmedLsn && prev.confirmedLsn && compareLsn(h.confirmedLsn, prev.confirmedLsn) > 0) advances += 1;
        samples.push(h);
        return Date.now() - idleAt >= IDLE_MS && advances >= 3 && compareLsn(h.restartLsn!, first.restartLsn!) > 0;
      },
      120_000,
      500,
    );
    const last = samples[samples.length - 1];
    const idleSeconds = (Date.now() - idleAt) / 1000;
    const maxRetained = Math.max(...samples.map((s) => s.retainedBytes ?? Infinity));
    console.log(
      `idle ${idleSeconds.toFixed(1)} s: confirmed_flush_lsn ${first.confirmedLsn} → ${last.confirmedLsn} (${advances} advances), ` +
        `restart_lsn ${first.restartLsn} → ${last.restartLsn}, retained WAL max ${maxRetained} B over ${samples.length} samples`,
    );
    expect(compareLsn(last.confirmedLsn!, first.confirmedLsn!)).toBeGreaterThan(0);
    expect(maxRetained).toBeLessThan(RETAINED_LIMIT);
    expect(samples.every((s) => s.active === true && s.walStatus === 'reserved')).toBe(true);
    // Heartbeats reached no replica: still exactly the burst applied.
    for (const r of REPLICAS) {
      const n = await f.w.replicas.withClient(`replica_${r}`, async (c) => Number((await c.query('SELECT coalesce(sum(txns_applied), 0)::bigint AS n FROM pgferry.progress')).rows[0].n));
      expect(n, `replica ${r}: transactions applied after the idle stretch`).toBe(burst);
    }

    // Then writes.
    const t0 = Date.now();
    const after = f.load(2);
    await f.more(after, 300);
    await f.settle(after, {
      n: 17,
      fault: `source idle ${idleSeconds.toFixed(0)} s after ${burst} txns (heartbeat 1 s: slot confirmed ${advances}× further, WAL retained ≤ ${(maxRetained / 1024).toFixed(0)} kiB), then writes; txns = after the idle stretch`,
      t0,
    });
  });
});
