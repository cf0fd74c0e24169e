// Where the benchmarks find the repository, their Python peers and the shared sample data: the same
// whether a module runs compiled (bench-dist/bench/*.js, `npm run bench`) or from source (bench/*.ts,
// imported by a test under vitest).
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The repository root (the folder holding bench/ and bench-dist/). */
export const repoRoot =
  path.basename(path.dirname(here)) === 'bench-dist' ? path.resolve(here, '..', '..') : path.resolve(here, '..');

/** A Python peer script kept beside the benchmark sources (bench/<name>). */
export function peerScript(name: string): string {
  return path.join(repoRoot, 'bench', name);
}

/** The shared sample data (CAPTIONER_SHARED_DATA, else ../shared/data beside the repository). */
export const sharedData = process.env.CAPTIONER_SHARED_DATA ?? path.resolve(repoRoot, '..', 'shared', 'data');
