import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import { createWorld, progressOf, startUp, upArgs, waitForEqual, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';
import { slotHealth, SlotHealth } from '../../src/capture/wal/slot-health';
import { compareLsn, lsnDistance } from '../../src/lsn';
import { publicationName, slotName } from '../../src/names';

/**
 * Slot health on a quiet source: with a 1 s heartbeat, capture keeps the
 * slot moving although nothing replicated changes, and past WAL written
 * outside the published tables, so the source never keeps WAL for pgferry;
 * heartbeats reach no replica; slotHealth() tells how much WAL the slot keeps.
 */
const SCHEMA = `
  CREATE TABLE items (id int PRIMARY KEY, note text);
  CREATE TABLE scratch (id int, pad text);
`;

describe('idle-source heartbeat and slot health', () => {
  let w: World;
  let up: Proc;
  let slot: string;

  const health = () => slotHealth(w.sourceUrl, w.sourceName);
  /** Wait until the slot's confirmed position is past `lsn` (the capture confirmed it to the server). */
  const confirmedPast = (lsn: string, why: string, timeoutMs = 30_000) =>
    waitFor(why, async () => {
      const h = await health();
      return h.confirmedLsn && compareLsn(h.confirmedLsn, lsn) > 0 ? h : null;
    }, timeoutMs);

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a'], schema: SCHEMA });
    slot = slotName(w.sourceName);
    up = await startUp(w, upArgs(w, ['--tables', 'items']), { PGFERRY_HEARTBEAT_SECONDS: '1' });
    await waitFor('capture to stream from the slot', async () => (await health()).active === true, 60_000);
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  it('moves the slot of an idle source, heartbeat after heartbeat, and keeps the WAL it holds bounded', async () => {
    const read = async () =>
      w.source.withClient('app', async (c) => (await c.query('SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1', [slot])).rows[0].lsn as string);
    const c0 = await read();
    const c1 = await waitFor('the idle slot to be confirmed further', async () => {
      const c = await read();
      return compareLsn(c, c0) > 0 ? c : null;
    }, 30_000);
    const c2 = await waitFor('the idle slot to be confirmed further again', async () => {
      const c = await read();
      return compareLsn(c, c1) > 0 ? c : null;
    }, 30_000);
    expect(compareLsn(c2, c0)).toBeGreaterThan(0);

    // slotHealth, checked against the catalog and itself.
    const h1 = await health();
    expect(h1).toMatchObject({ slot, exists: true, active: true, walStatus: 'reserved' });
    expect(compareLsn(h1.confirmedLsn!, c2)).toBeGreaterThanOrEqual(0);
    expect(compareLsn(h1.restartLsn!, h1.confirmedLsn!)).toBeLessThanOrEqual(0);
    expect(compareLsn(h1.confirmedLsn!, h1.currentLsn)).toBeLessThanOrEqual(0);
    expect(h1.retainedBytes).toBe(lsnDistance(h1.restartLsn!, h1.currentLsn));

    // restart_lsn (what the source really keeps) follows: PostgreSQL moves it at the running-xacts
    // records it logs every 15 s while WAL is written, here only by the heartbeats.
    const h2 = await waitFor('restart_lsn to move past where it was', async () => {
      const h = await health();
      return compareLsn(h.restartLsn!, h1.restartLsn!) > 0 ? h : null;
    }, 90_000);
    // Bounded: what the idle slot keeps is a few heartbeats' worth, far from a WAL segment.
    for (const h of [h1, h2]) expect(h.retainedBytes!).toBeLessThan(1024 * 1024);
    expect(h2.retainedBytes!).toBeLessThan(h1.retainedBytes! + 256 * 1024);

    const none = await slotHealth(w.sourceUrl, 'nosuchsource');
    expect(none).toMatchObject({ slot: 'pgferry_nosuchsource', exists: false, active: null, restartLsn: null, confirmedLsn: null, retainedBytes: null, walStatus: null });
    expect(compareLsn(none.currentLsn, h2.currentLsn)).toBeGreaterThanOrEqual(0);
  });

  it('moves the slot past WAL written outside the published tables', async () => {
    // ~30 MB of WAL in a table capture does not publish, and more in another database.
    const other = await w.source.createDatabase('other');
    expect(other).toContain('/other');
    await w.source.withClient('other', (c) => c.query(`CREATE TABLE bulk AS SELECT g AS id, repeat('y', 200) AS pad FROM generate_series(1, 50000) g`));
    const start = (await health()).currentLsn;
    const end = await w.source.withClient('app', async (c) => {
      await c.query(`INSERT INTO scratch SELECT g, repeat('x', 200) FROM generate_series(1, 100000) g`);
      return (await c.query('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0].lsn as string;
    });
    expect(lsnDistance(start, end)).toBeGreaterThan(16 * 1024 * 1024);
    await confirmedPast(end, 'the slot to be confirmed past the unpublished WAL');
    const after = await waitFor('restart_lsn to move past the unpublished WAL', async () => {
      const h = await health();
      return compareLsn(h.restartLsn!, end) > 0 ? h : null;
    }, 90_000);
    expect(after.retainedBytes!).toBeLessThan(1024 * 1024);
  });

  it('replicates a normal write afterwards; heartbeats reached no replica', async () => {
    await w.source.withClient('app', (c) => c.query(`INSERT INTO items VALUES (1, 'after a quiet spell')`));
    await waitForEqual(w, 'a', ['items']);
    // The only transaction the replica applied is that insert: heartbeats are acknowledged, not published.
    expect((await progressOf(w, 'a')).txns_applied).toBe('1');
    const written = await w.source.withClient('app', async (c) => (await c.query('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0].lsn as string);
    const h = await confirmedPast(written, 'the slot to be confirmed past the insert and later heartbeats');
    expect(h.exists && h.active).toBe(true);
  });

  it('warns once, naming the source and the cause, when the source refuses the heartbeat; keepalives still move the slot', async () => {
    await up.stop();
    // Capture as a role that may replicate but not write logical messages.
    await w.source.withClient('app', (c) =>
      c.query(`
        CREATE ROLE capture LOGIN REPLICATION;
        GRANT CREATE ON DATABASE app TO capture;
        ALTER TABLE items OWNER TO capture;
        ALTER PUBLICATION ${publicationName(w.sourceName)} OWNER TO capture;
        REVOKE EXECUTE ON FUNCTION pg_catalog.pg_logical_emit_message(boolean, text, text) FROM PUBLIC;
      `),
    );
    const args = ['up', '--source', w.source.url('app', 'capture'), '--replica', `a=${w.replicaUrls.a}`, '--tables', 'items'];
    up = await startUp(w, args, { PGFERRY_HEARTBEAT_SECONDS: '1' });
    const warning = new RegExp(`source '${w.sourceName}': cannot write the idle heartbeat \\(permission denied for function pg_logical_emit_message[^)]*\\)[^"]*GRANT EXECUTE`, 'g');
    const warnings = () => (up.output().match(warning) ?? []).length;
    await waitFor('capture to warn that it cannot write the heartbeat', () => warnings() > 0, 90_000).catch((err) => {
      throw new Error(`${(err as Error).message}\npgferry output:\n${up.output().slice(-4000)}`);
    });
    // Capture keeps trying each second on the same connection: several statements, still one warning.
    const attempts = new Set<string>();
    await waitFor('several more heartbeat attempts', async () => {
      const { rows } = await w.source.withClient('postgres', (c) => c.query(`SELECT query_start::text AS t FROM pg_stat_activity WHERE application_name = 'pgferry heartbeat' AND query LIKE '%pg_logical_emit_message%'`));
      for (const r of rows) attempts.add(r.t);
      return attempts.size >= 4;
    }, 30_000, 100);
    expect(warnings()).toBe(1);

    // Without heartbeats, the server's keepalives move the slot past WAL that touches no published table.
    const end = await w.source.withClient('app', async (c) => {
      await c.query(`INSERT INTO scratch SELECT g, 'z' FROM generate_series(1, 10000) g`);
      return (await c.query('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0].lsn as string;
    });
    await confirmedPast(end, 'the slot to be confirmed past unpublished WAL on keepalives alone');
    await w.source.withClient('app', (c) => c.query(`INSERT INTO items VALUES (2, 'as role capture')`));
    await waitForEqual(w, 'a', ['items']);
  });
});
