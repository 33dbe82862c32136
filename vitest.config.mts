import { defineConfig } from 'vitest/config';

// End-to-end files start their own PostgreSQL clusters and Temporal dev server:
// run files one at a time on this 2-core machine, with generous timeouts.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 300_000,
    hookTimeout: 180_000,
    reporters: ['default'],
  },
});
