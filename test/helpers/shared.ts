// Locates the real test material in ../shared/data. Tests that need it announce loudly when it is absent.
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from './cli.js';

export const sharedData = process.env.CAPTIONER_SHARED_DATA ?? path.resolve(repoRoot, '..', 'shared', 'data');
export const hasShared = existsSync(path.join(sharedData, 'README.md'));

/** Print a visible notice (vitest shows skipped tests too) when the real data is missing. */
export function announceSkip(what: string): void {
  if (!hasShared)
    process.stderr.write(`\n*** SKIPPING ${what}: ${sharedData} not found (real-data tests need ../shared/data) ***\n`);
}
