import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Two tiers. `npm test` (project "unit"): unit and integration tests, under 4 minutes on 2 idle cores.
// `npm run test:e2e` (project "e2e"): the slow end-to-end ones, named *.e2e.test.ts: the full demo, VGG16 end
// to end, whole stages through the CLI, the worker-thread runs, the browser tests, the PyTorch peers.
// .ci/run runs both.
const E2E = 'test/**/*.e2e.test.ts';

export default defineConfig({
  test: {
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
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/**/*.test.ts'], exclude: [E2E] } },
      // end-to-end runs take minutes each, longer on a loaded machine: generous limits, so they fail on errors, not on load
      { extends: true, test: { name: 'e2e', include: [E2E], testTimeout: 900_000, hookTimeout: 300_000 } },
    ],
  },
});
