import { defineConfig } from 'vitest/config';

// `npm run test:chaos`: the randomized fault campaign (test/chaos), long form: 20 seeds of 90 s by
// default (PGFERRY_CHAOS_SEEDS, PGFERRY_CHAOS_SECONDS; PGFERRY_CHAOS_SEED replays one). The table is
// printed at the end and written to test/chaos/results/latest.md. `npm test` runs one short run.
process.env.PGFERRY_CHAOS_SEEDS ??= '20';
process.env.PGFERRY_CHAOS_SECONDS ??= '90';
process.env.PGFERRY_CHAOS_REPORT ??= 'latest';
export default defineConfig({
  test: {
    include: ['test/chaos/**/*.chaos.ts'],
    fileParallelism: false,
    testTimeout: 1_200_000,
    hookTimeout: 300_000,
    reporters: ['default'],
  },
});
