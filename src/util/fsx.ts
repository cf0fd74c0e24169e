// Filesystem helpers: atomic writes (temp file + fsync + rename) and JSON/JSONL I/O with clear errors.
import { promises as fs, constants as fsc, createReadStream } from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { DataError, WriteError } from '../errors.js';

let counter = 0;

/**
 * Create folder `dir` and its missing parents, with a clear DataError when that cannot work. Walks up to
 * the nearest existing ancestor, checks it is a writable folder, then creates each missing level on its
 * own. (Node's `mkdir(..., { recursive: true })` spins at 100% CPU forever on some paths, e.g. /proc/x.)
 */
export async function ensureDir(dir: string): Promise<void> {
  const fail = (why: string) => new DataError(`${dir}: cannot create folder: ${why}`);
  const missing: string[] = [];
  let cur = path.resolve(dir);
  for (;;) {
    let st;
    try {
      st = await fs.stat(cur);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // ENOTDIR: some ancestor is a file; walking up finds and names it
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw fail(`${cur}: ${code ?? (e as Error).message}`);
    }
    if (st) {
      if (!st.isDirectory()) throw fail(`${cur} is a file, not a folder`);
      break;
    }
    missing.push(cur);
    const up = path.dirname(cur);
    if (up === cur) throw fail(`${cur} does not exist`);
    cur = up;
  }
  if (missing.length === 0) return;
  try {
    await fs.access(cur, fsc.W_OK | fsc.X_OK);
  } catch {
    throw fail(`${cur} is not writable`);
  }
  for (const d of missing.reverse()) {
    try {
      await fs.mkdir(d);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' && (await fs.stat(d).catch(() => null))?.isDirectory()) continue; // made meanwhile
      throw fail(
        `${d}: ${code === 'ENOENT' ? `${path.dirname(d)} does not accept new folders` : (code ?? (e as Error).message)}`,
      );
    }
  }
}

const REASONS: Record<string, string> = {
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EROFS: 'read-only file system',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EIO: 'input/output error',
  EFBIG: 'file too large',
  ENOENT: 'no such file or folder',
  ENOTDIR: 'a part of the path is not a folder',
  EISDIR: 'is a folder',
};

/**
 * Codes that mean the filesystem refused a write (full disk, quota, I/O error, read-only, permissions, size,
 * a file where a folder should be): the user's to fix, reported in one line. Anything else is a bug.
 */
const WRITE_FAILURES: ReadonlySet<string> = new Set([
  'ENOSPC',
  'EDQUOT',
  'EIO',
  'EROFS',
  'EACCES',
  'EPERM',
  'EFBIG',
  'ENOTDIR',
]);

/** The reason a write failed for the filesystem's own reasons ("no space left on device (ENOSPC)"), or null for any other error. */
export function writeFailure(e: unknown): string | null {
  const code = (e as NodeJS.ErrnoException)?.code;
  return code && WRITE_FAILURES.has(code) ? ioReason(e) : null;
}

/** A short human reason for an I/O error: "no space left on device (ENOSPC)". */
export function ioReason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code && REASONS[code]) return `${REASONS[code]} (${code})`;
  return code ?? (e as Error)?.message ?? String(e);
}

/**
 * Write `data` to `file` atomically: readers see the old content or the new one, never a mix. Any failure
 * (a full disk included) removes the temp file and throws a DataError naming `file` and the FIRST error
 * (a failed fsync or close after a failed write does not hide the write's reason).
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  await ensureDir(path.dirname(file));
  const tmp = `${file}.${process.pid}.${counter++}.tmp`;
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(tmp, 'w');
    await handle.writeFile(data);
    await handle.sync();
    const h = handle;
    handle = undefined;
    await h.close();
    await fs.rename(tmp, file);
  } catch (e) {
    await handle?.close().catch(() => {});
    await fs.unlink(tmp).catch(() => {});
    throw new WriteError(file, ioReason(e));
  }
}

export async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n');
}

export async function readJson<T = unknown>(file: string, what = 'file'): Promise<T> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    throw new DataError(`${file}: cannot read ${what}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new DataError(`${file}: not valid JSON: ${(e as Error).message}`);
  }
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p);
    return true;
  } catch {
    return false;
  }
}

/** Iterate over the lines of a text file (handles CRLF), with 1-based line numbers. */
export async function* readLines(file: string): AsyncGenerator<{ line: string; lineNo: number }> {
  const rl = readline.createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
  let lineNo = 0;
  for await (const raw of rl) {
    lineNo++;
    yield { line: raw.endsWith('\r') ? raw.slice(0, -1) : raw, lineNo };
  }
}
