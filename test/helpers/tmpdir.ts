// vitest globalSetup: one fresh temporary folder per test run. Sets TMPDIR to it in the main process before
// any test worker starts, so os.tmpdir() in the tests, in their worker processes and in the CLI processes
// they spawn (which inherit the environment) lands inside it; teardown removes it with everything in it,
// however a test ended. Tests that want their own filesystem (a tmpfs mounted on a folder) mount it inside.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

export default function setup(): () => void {
  const before = process.env.TMPDIR;
  const dir = mkdtempSync(path.join(tmpdir(), 'captioner-test-run-'));
  process.env.TMPDIR = dir;
  return () => {
    if (before === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = before;
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    } catch (e) {
      // a tmpfs a test failed to unmount keeps its mount point: say so rather than fail the run
      console.warn(`could not remove the test run's temporary folder ${dir}: ${(e as Error).message}`);
    }
  };
}
