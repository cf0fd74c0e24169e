// Filesystem helpers: atomic writes (temp file + fsync + rename) and JSON/JSONL I/O with clear errors.
import { promises as fs, createReadStream } from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { DataError } from '../errors.js';

let counter = 0;

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
  const tmp = `${file}.${process.pid}.${counter++}.tmp`;
  let handle: fs.FileHandle | undefined;
  try {
    await fs.mkdir(path.dirname(file), { recursive: true });
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
    throw new DataError(`${file}: cannot write: ${ioReason(e)}`);
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
