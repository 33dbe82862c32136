import { defineConfig } from 'vitest/config';

// `npm run test:faults`: the fault matrix (test/faults), faults injected under a live workload with
// an audit of lost and duplicated transactions. Separate from `npm test` (it takes long); the
// results table is printed at the end and written to test/faults/results/latest.md.
export default defineConfig({
  test: {
    include: ['test/faults/**/*.fault.ts'],
    fileParallelism: false,
    testTimeout: 900_000,
    hookTimeout: 300_000,
    globalSetup: ['test/faults/report.ts'],
    reporters: ['default'],
  },
});
