// Finds the images to caption: folders (recursive by default), files, globs, or `-` (a list of paths on
// stdin). Image files are recognised by extension; hidden files and folders are skipped; symlinks are
// followed without looping (real paths of visited folders are remembered). Output is sorted.
// Folder scans and stdin lists work on raw bytes, so a file name that is not valid UTF-8 is still read
// (Found.file holds its bytes; Found.path shows it with U+FFFD for the undecodable bytes).
// A path that cannot be used (missing, a broken link, a link loop) becomes a per-file error, not a stop.
import { promises as fs } from 'node:fs';
import { isUtf8 } from 'node:buffer';
import * as path from 'node:path';
import fg from 'fast-glob';
import { UsageError } from '../errors.js';

export interface DiscoverOptions {
  recursive: boolean;
  /** Lower-case extensions without the dot. */
  extensions: string[];
  /** Where `-` reads its list from (default: process.stdin). */
  stdin?: NodeJS.ReadableStream;
  /** Filled with the files a folder scan passed over (not an image extension), counted by extension. */
  skipped?: Map<string, number>;
}

export interface Found {
  /** The path as the user will see it in the output (relative paths stay relative). */
  path: string;
  /** The raw path, when it is not valid UTF-8 (`path` then cannot be used to open it). */
  file?: Buffer;
  /** Set when the path cannot be used (e.g. a broken symlink named explicitly): reported per file. */
  error?: string;
}

type RawPath = string | Buffer;
const SLASH = 0x2f;
const show = (p: RawPath) => (typeof p === 'string' ? p : p.toString('utf8'));
const found = (p: RawPath, error?: string): Found => {
  const f: Found = { path: show(p) };
  if (typeof p !== 'string' && !isUtf8(p)) f.file = p;
  if (error) f.error = error;
  return f;
};
const isHidden = (name: string) => name.startsWith('.') && name !== '.' && name !== '..';

export function hasImageExtension(file: string, extensions: string[]): boolean {
  const ext = path.extname(file).slice(1).toLowerCase();
  return ext.length > 0 && extensions.includes(ext);
}

/** Why a path whose stat failed cannot be used (lstat tells a link from nothing at all). */
async function statFailure(p: RawPath, e: unknown): Promise<string> {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ELOOP') return 'symbolic link loop';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    const isLink = await fs.lstat(p).then((s) => s.isSymbolicLink(), () => false);
    return isLink ? 'broken symbolic link (its target does not exist)' : 'no such file or folder';
  }
  return `cannot read (${code ?? (e as Error).message})`;
}

function trimBytes(b: Buffer): Buffer {
  let s = 0;
  let e = b.length;
  const ws = (c: number) => c === 0x20 || c === 0x09 || c === 0x0d;
  while (s < e && ws(b[s])) s++;
  while (e > s && ws(b[e - 1])) e--;
  return b.subarray(s, e);
}

/** The paths listed on `stream`, one a line; lines that are not UTF-8 stay raw bytes. */
async function readStdinList(stream: NodeJS.ReadableStream): Promise<RawPath[]> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
  const all = Buffer.concat(chunks);
  const out: RawPath[] = [];
  let pos = 0;
  while (pos <= all.length) {
    let nl = all.indexOf(0x0a, pos);
    if (nl < 0) nl = all.length;
    const line = trimBytes(all.subarray(pos, nl));
    if (line.length) out.push(isUtf8(line) ? line.toString('utf8') : Buffer.from(line));
    pos = nl + 1;
  }
  return out;
}

/** path.join for raw names (the same result as path.join whenever both parts are UTF-8). */
function joinRaw(dir: Buffer, name: Buffer): Buffer {
  if (isUtf8(dir) && isUtf8(name)) return Buffer.from(path.join(dir.toString('utf8'), name.toString('utf8')));
  return dir.length && dir[dir.length - 1] === SLASH ? Buffer.concat([dir, name]) : Buffer.concat([dir, Buffer.from('/'), name]);
}

async function walk(dir: Buffer, opts: DiscoverOptions, seen: Set<string>, out: Found[]): Promise<void> {
  let real: string;
  try {
    real = (await fs.realpath(dir, { encoding: 'buffer' })).toString('hex');
  } catch {
    return;
  }
  if (seen.has(real)) return; // symlink loop or a folder reached twice
  seen.add(real);
  let entries: import('node:fs').Dirent<Buffer>[];
  try {
    entries = (await fs.readdir(dir, { withFileTypes: true, encoding: 'buffer' })) as unknown as import('node:fs').Dirent<Buffer>[];
  } catch (e) {
    out.push(found(dir, `cannot read folder: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`));
    return;
  }
  for (const ent of entries) {
    const name = ent.name.toString('utf8');
    if (isHidden(name)) continue;
    const p = joinRaw(dir, ent.name);
    let isDir = ent.isDirectory();
    let isFile = ent.isFile();
    if (ent.isSymbolicLink()) {
      try {
        const st = await fs.stat(p);
        isDir = st.isDirectory();
        isFile = st.isFile();
      } catch (e) {
        if (hasImageExtension(name, opts.extensions)) out.push(found(p, await statFailure(p, e)));
        continue;
      }
    }
    if (isDir) {
      if (opts.recursive) await walk(p, opts, seen, out);
    } else if (isFile && hasImageExtension(name, opts.extensions)) {
      out.push(found(p));
    } else if (isFile && opts.skipped) {
      const ext = path.extname(name).toLowerCase() || '(no extension)';
      opts.skipped.set(ext, (opts.skipped.get(ext) ?? 0) + 1);
    }
  }
}

/** Expand the command-line PATH arguments into a sorted, de-duplicated list of image files. */
export async function discoverImages(inputs: string[], opts: DiscoverOptions): Promise<Found[]> {
  if (inputs.length === 0) throw new UsageError('no input: give folders, files, globs, or - to read paths from stdin');
  const expanded: RawPath[] = [];
  for (const input of inputs) {
    if (input === '-') expanded.push(...(await readStdinList(opts.stdin ?? process.stdin)));
    else expanded.push(input);
  }
  const out: Found[] = [];
  const seen = new Set<string>();
  for (const input of expanded) {
    let st: import('node:fs').Stats | undefined;
    let failure: unknown;
    try {
      st = await fs.stat(input);
    } catch (e) {
      failure = e;
    }
    if (st?.isDirectory()) {
      const before = out.length;
      await walk(typeof input === 'string' ? Buffer.from(input) : input, opts, seen, out);
      if (out.length === before) throw new UsageError(`${show(input)}: no images found (extensions: ${opts.extensions.join(', ')}${opts.recursive ? '' : '; not recursive'})`);
    } else if (st?.isFile()) {
      out.push(found(input)); // named explicitly: taken whatever its extension; content decides
    } else if (st) {
      out.push(found(input, 'not a regular file (a device, FIFO or socket)')); // never read: it could block
    } else if (typeof input === 'string' && fg.isDynamicPattern(input)) {
      const matches = await fg(input, { dot: false, onlyFiles: true, followSymbolicLinks: true, unique: true });
      const images = matches.filter((m) => hasImageExtension(m, opts.extensions));
      if (images.length === 0) throw new UsageError(`${input}: the pattern matches no images`);
      out.push(...images.map((m) => ({ path: m })));
    } else {
      out.push(found(input, await statFailure(input, failure))); // one missing path is one error line, not a stop
    }
  }
  // sort by code point (stable across locales) and drop duplicates
  const byPath = new Map<string, Found>();
  for (const f of out) {
    const key = f.file ? `raw:${f.file.toString('hex')}` : f.path;
    if (!byPath.has(key)) byPath.set(key, f);
  }
  return [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
