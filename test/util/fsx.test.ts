import { existsSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DataError } from '../../src/errors.js';
import { ensureDir, ioReason, writeFailure, writeFileAtomic } from '../../src/util/fsx.js';

const root = mkdtempSync(path.join(tmpdir(), 'fsx-'));
const hasProc = existsSync('/proc/self');
if (!hasProc) console.warn('skipping the /proc case of ensureDir: this system has no /proc');

describe('ensureDir', () => {
  it('creates missing parents and accepts an existing folder', async () => {
    const d = path.join(root, 'a', 'b', 'c');
    await ensureDir(d);
    expect(statSync(d).isDirectory()).toBe(true);
    await ensureDir(d);
    await ensureDir(root);
  });

  it('a file on the way is a DataError naming it', async () => {
    const f = path.join(root, 'plain.txt');
    writeFileSync(f, 'x');
    await expect(ensureDir(f)).rejects.toThrow(
      new DataError(`${f}: cannot create folder: ${f} is a file, not a folder`),
    );
    await expect(ensureDir(path.join(f, 'x', 'y'))).rejects.toThrow(
      `${path.join(f, 'x', 'y')}: cannot create folder: ${f} is a file, not a folder`,
    );
  });

  // Node's recursive mkdir spins forever here; ensureDir must fail at once (the test would time out)
  it.skipIf(!hasProc)('a folder that refuses new entries (/proc) is a DataError, not a hang', async () => {
    for (const d of ['/proc/captioner-nope', '/proc/captioner-nope/deeper']) {
      const err = await ensureDir(d).catch((e) => e);
      expect(err).toBeInstanceOf(DataError);
      expect(err.message).toBe(`${d}: cannot create folder: /proc/captioner-nope: /proc does not accept new folders`);
    }
  });

  it('is what writeFileAtomic uses for the parent folder', async () => {
    const f = path.join(root, 'w', 'x', 'file.txt');
    await writeFileAtomic(f, 'hello');
    expect(existsSync(f)).toBe(true);
    if (hasProc) await expect(writeFileAtomic('/proc/captioner-nope/file.txt', 'x')).rejects.toBeInstanceOf(DataError);
  });
});

describe('writeFailure', () => {
  const err = (code: string) => Object.assign(new Error(`${code}: x`), { code });
  it('names the filesystem refusals a user can fix (full disk, quota, I/O, read-only, permissions, size, a file for a folder)', () => {
    expect(writeFailure(err('ENOSPC'))).toBe('no space left on device (ENOSPC)');
    expect(writeFailure(err('EPERM'))).toBe('permission denied (EPERM)');
    expect(writeFailure(err('ENOTDIR'))).toBe('a part of the path is not a folder (ENOTDIR)');
    for (const c of ['EDQUOT', 'EIO', 'EROFS', 'EACCES', 'EFBIG']) expect(writeFailure(err(c))).toBe(ioReason(err(c)));
  });
  it('is null for anything else (a bug, not a refusal), which the caller rethrows', () => {
    for (const e of [
      err('ENOENT'),
      err('EISDIR'),
      err('EBADF'),
      new Error('plain'),
      new TypeError('x'),
      null,
      undefined,
    ])
      expect(writeFailure(e)).toBeNull();
  });
});
