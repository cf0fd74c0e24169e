// What the three worker-thread hosts (serve's model worker, the decoding pool, the data-parallel trainer)
// share: where a compiled worker entry lives, and how an error sent back by a worker becomes ours again.
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CaptionerError, ConfigError, DataError, ModelError, UsageError } from '../errors.js';

/**
 * A file of the compiled build (`parts` under dist/), also when the caller runs from src/ (tests): worker
 * threads need JavaScript. `what` names the feature in the error when the build is missing.
 */
export function builtFile(what: string, ...parts: string[]): string {
  const here = fileURLToPath(import.meta.url); // src/util/workers.ts or dist/util/workers.js
  const root = here.endsWith('.ts') ? path.resolve(path.dirname(here), '..', '..', 'dist') : path.resolve(path.dirname(here), '..');
  const file = path.join(root, ...parts);
  if (!existsSync(file)) throw new Error(`${what}: ${file} is missing; build first (npx tsc -p .)`);
  return file;
}

/** A worker's error rebuilt as its class when it is a user-fixable kind (so it keeps its exit code). */
export function userErrorFrom(name: string, message: string): CaptionerError | undefined {
  const known: Record<string, new (m: string) => CaptionerError> = { ModelError, DataError, ConfigError, UsageError };
  const K = known[name];
  return K ? new K(message) : undefined;
}
