import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // one temporary folder per run, removed at the end (TMPDIR for the tests and the CLIs they spawn)
    globalSetup: ['test/helpers/tmpdir.ts'],
    pool: 'forks',
    // 2-core machines: two workers keep wall time down without thrashing
    maxWorkers: 2,
    reporters: ['default'],
  },
});
