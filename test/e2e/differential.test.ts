import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Proc } from '../helpers/procs';
import { contentOf, createWorld, startUp, waitForEqual, World } from '../helpers/fixture';
import { RANDOM_SCHEMA, RANDOM_TABLES, runRandomWorkload } from '../helpers/random-workload';

/**
 * Randomized differential test: a seeded mixed workload on the source, two
 * replicas, and the oracle "replica content equals source content".
 * Replay a failure with PGFERRY_SEED=<printed seed>.
 */
const SEED = Number(process.env.PGFERRY_SEED ?? Math.floor(Math.random() * 2 ** 31));
const TXNS = Number(process.env.PGFERRY_DIFF_TXNS ?? 400);

describe(`randomized differential test (PGFERRY_SEED=${SEED})`, () => {
  let w: World;
  let up: Proc;

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a', 'b'], schema: RANDOM_SCHEMA });
    up = await startUp(w, undefined, { PGFERRY_CHUNK_CHANGES: '50' }); // small chunks: large transactions span many messages
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  it('both replicas end equal to the source', async () => {
    console.log(`differential test: PGFERRY_SEED=${SEED}, ${TXNS} transactions`);
    const { committed, changes } = await w.source.withClient('app', (c) => runRandomWorkload(c, SEED, TXNS));
    console.log(`workload done: ${committed} committed transactions, ${changes} statements`);
    await Promise.all([waitForEqual(w, 'a', RANDOM_TABLES, 180_000), waitForEqual(w, 'b', RANDOM_TABLES, 180_000)]);
    const content = await contentOf(w.source, 'app', RANDOM_TABLES);
    expect(content.r_items.length + content.r_events.length + content.r_nokey.length).toBeGreaterThan(0);
  });
});
