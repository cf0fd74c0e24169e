// Atomic writes on a full disk: a tiny tmpfs (needs root and mount; skipped VISIBLY otherwise) and /dev/full.
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataError } from '../../src/errors.js';
import { writeFileAtomic } from '../../src/util/fsx.js';

let small: string | null = null;
let why = '';

beforeAll(async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-tmpfs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir], { stdio: 'pipe' });
    small = dir;
  } catch (e) {
    why = `cannot mount a 64 KiB tmpfs (${String((e as Error).message).split('\n')[0]}); needs root`;
    process.stderr.write(`\n*** SKIPPING the tmpfs full-disk test: ${why} ***\n`);
    await fs.rm(dir, { recursive: true, force: true });
  }
});

afterAll(async () => {
  if (small) {
    execFileSync('umount', [small]);
    await fs.rm(small, { recursive: true, force: true });
  }
});

describe('writeFileAtomic on a full disk', () => {
  it('throws a DataError naming the file and ENOSPC, keeps the old content, leaves no .tmp file', async (ctx) => {
    if (!small) return ctx.skip(why);
    const file = path.join(small, 'report.json');
    await writeFileAtomic(file, 'old\n');
    const err = await writeFileAtomic(file, Buffer.alloc(1024 * 1024, 1)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataError);
    expect((err as Error).message).toBe(`${file}: cannot write: no space left on device (ENOSPC)`);
    expect(await fs.readFile(file, 'utf8')).toBe('old\n');
    expect(await fs.readdir(small)).toEqual(['report.json']);
  });

  it('reports a folder it cannot create into as a DataError, not a crash', async () => {
    const err = await writeFileAtomic('/dev/full/x.json', 'x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataError);
    expect((err as Error).message).toBe('/dev/full: cannot create folder: /dev/full is a file, not a folder');
  });
});
