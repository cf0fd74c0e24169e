// A scratch folder for one benchmark, with captioner's own logs silenced while it runs (the table is
// the output); the folder is removed and CAPTIONER_QUIET restored afterwards, whatever happens.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export async function inScratch<T>(name: string, fn: (tmp: string) => Promise<T>): Promise<T> {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), `captioner-bench-${name}-`));
  const quiet = process.env.CAPTIONER_QUIET;
  process.env.CAPTIONER_QUIET = '1';
  try {
    return await fn(tmp);
  } finally {
    if (quiet === undefined) delete process.env.CAPTIONER_QUIET;
    else process.env.CAPTIONER_QUIET = quiet;
    await fs.rm(tmp, { recursive: true, force: true });
  }
}
