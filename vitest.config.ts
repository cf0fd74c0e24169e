import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // 2-core machines: two workers keep wall time down without thrashing
    maxWorkers: 2,
    reporters: ['default'],
  },
});
