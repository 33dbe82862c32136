import { defineConfig } from 'vitest/config';

// `npm run bench`: the benchmark against native logical replication (test/bench), not part of `npm test`.
export default defineConfig({
  test: {
    include: ['test/bench/**/*.run.ts'],
    fileParallelism: false,
    testTimeout: 7_200_000,
    hookTimeout: 300_000,
    reporters: ['default'],
  },
});
