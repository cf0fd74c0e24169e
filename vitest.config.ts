import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // one temporary folder per run, removed at the end (TMPDIR for the tests and the CLIs they spawn)
    globalSetup: ['test/helpers/tmpdir.ts'],
    pool: 'forks',
    // worker threads started by the code under test run its TypeScript sources too (src/util/rpc.ts
    // workerEntry picks src/**/worker.ts beside a src/ host), through these module hooks; they inherit the flag
    execArgv: ['--import', fileURLToPath(new URL('./test/helpers/register-ts.mjs', import.meta.url))],
    // 2-core machines: two workers keep wall time down without thrashing
    maxWorkers: 2,
    reporters: ['default'],
  },
});
