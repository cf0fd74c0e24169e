// Finds the images to caption: folders (recursive by default), files, globs, or `-` (a list of paths on
// stdin). Image files are recognised by extension; hidden files and folders are skipped; symlinks are
// followed without looping (real paths of visited folders are remembered). Output is sorted.
// Folder scans and stdin lists work on raw bytes, so a file name that is not valid UTF-8 is still read
// (Found.file holds its bytes; Found.path shows it with each undecodable byte as \xNN, reversibly: see
// pathname.ts, so two names that differ only in such bytes stay two images).
// A path that cannot be used (missing, a broken link, a link loop, a FIFO or device, a folder named like an
// image that holds none) becomes a per-file error, not a stop.
// What captioner itself writes is never taken as input: folders marked with OUTPUT_MARKER (attention maps)
// are passed over by scans, and so are the files and folders given in `exclude` (the --output file).
import { promises as fs } from 'node:fs';
import { isUtf8 } from 'node:buffer';
import * as path from 'node:path';
import fg from 'fast-glob';
import { UsageError } from '../errors.js';
import { displayPath, isEscaped } from './pathname.js';

/** A file that marks a folder as captioner's output (attention maps): folder scans pass over it. */
export const OUTPUT_MARKER = '.captioner-output';

export interface DiscoverOptions {
  recursive: boolean;
  /** Lower-case extensions without the dot. */
  extensions: string[];
  /** Where `-` reads its list from (default: process.stdin). */
  stdin?: NodeJS.ReadableStream;
  /** Filled with the files a folder scan passed over (not an image extension), counted by extension. */
  skipped?: Map<string, number>;
  /** Outputs of this run (the --output file, the attention maps folder): never taken as input. */
  exclude?: string[];
  /** Filled with the output folders a scan passed over (marked with OUTPUT_MARKER, or in `exclude`). */
  outputsSkipped?: string[];
}

export interface Found {
  /** The path as the user will see it in the output (relative paths stay relative). */
  path: string;
  /** The raw path, when `path` shows it escaped (not valid UTF-8): `path` then cannot be used to open it. */
  file?: Buffer;
  /** Set when the path cannot be used (e.g. a broken symlink named explicitly): reported per file. */
  error?: string;
}

type RawPath = string | Buffer;
const SLASH = 0x2f;
const show = (p: RawPath) => displayPath(p);
const found = (p: RawPath, error?: string): Found => {
  const f: Found = { path: show(p) };
  if (isEscaped(f.path)) f.file = typeof p === 'string' ? Buffer.from(p, 'utf8') : p;
  if (error) f.error = error;
  return f;
};
/** What a non-regular, non-folder entry is, for its error line. */
const special = (st: {
  isFIFO(): boolean;
  isSocket(): boolean;
  isCharacterDevice(): boolean;
  isBlockDevice(): boolean;
}) =>
  st.isFIFO()
    ? 'a FIFO'
    : st.isSocket()
      ? 'a socket'
      : st.isCharacterDevice() || st.isBlockDevice()
        ? 'a device'
        : 'not a file';
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
    const isLink = await fs.lstat(p).then(
      (s) => s.isSymbolicLink(),
      () => false,
    );
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
  return dir.length && dir[dir.length - 1] === SLASH
    ? Buffer.concat([dir, name])
    : Buffer.concat([dir, Buffer.from('/'), name]);
}

/** Identity (device and inode) of each existing path of `paths`. */
async function identities(paths: readonly string[]): Promise<Set<string>> {
  const ids = new Set<string>();
  for (const p of paths) {
    const st = await fs.stat(p).catch(() => null);
    if (st) ids.add(`${st.dev}:${st.ino}`);
  }
  return ids;
}

interface WalkContext {
  opts: DiscoverOptions;
  /** Real paths (hex) of the folders scanned, with the images (and failures) found under each. */
  seen: Map<string, number>;
  out: Found[];
  /** dev:ino of this run's outputs. */
  outputs: Set<string>;
}

async function walk(dir: Buffer, ctx: WalkContext, top: boolean): Promise<void> {
  const { seen, out } = ctx;
  let real: string;
  try {
    real = (await fs.realpath(dir, { encoding: 'buffer' })).toString('hex');
  } catch {
    return;
  }
  if (seen.has(real)) return; // symlink loop or a folder reached twice
  seen.set(real, 0);
  const before = out.length;
  // a folder passed over as output is forgotten, so that naming it on the command line still scans it
  if ((await scan(dir, ctx, top)) === 'output') seen.delete(real);
  else seen.set(real, out.length - before);
}

/** Scan one folder (walk() has checked it is new); 'output' when it was passed over as captioner's output. */
async function scan(dir: Buffer, ctx: WalkContext, top: boolean): Promise<'output' | void> {
  const { opts, out } = ctx;
  let entries: import('node:fs').Dirent<Buffer>[];
  try {
    entries = (await fs.readdir(dir, {
      withFileTypes: true,
      encoding: 'buffer',
    })) as unknown as import('node:fs').Dirent<Buffer>[];
  } catch (e) {
    out.push(found(dir, `cannot read folder: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`));
    return;
  }
  // captioner's own output (attention maps): maps of maps are no one's wish. A marked folder named on the
  // command line is taken as asked; this run's own output folder never is.
  const marked = entries.some((e) => e.name.toString('utf8') === OUTPUT_MARKER);
  if ((marked && !top) || (ctx.outputs.size > 0 && ctx.outputs.has(await idOf(dir)))) {
    opts.outputsSkipped?.push(show(dir));
    return 'output';
  }
  for (const ent of entries) {
    const name = ent.name.toString('utf8');
    if (isHidden(name)) continue;
    const p = joinRaw(dir, ent.name);
    let isDir = ent.isDirectory();
    let isFile = ent.isFile();
    let kind: string | null = isDir || isFile || ent.isSymbolicLink() ? null : special(ent);
    if (ent.isSymbolicLink()) {
      try {
        const st = await fs.stat(p);
        isDir = st.isDirectory();
        isFile = st.isFile();
        if (!isDir && !isFile) kind = special(st);
      } catch (e) {
        if (hasImageExtension(name, opts.extensions)) out.push(found(p, await statFailure(p, e)));
        continue;
      }
    }
    if (isFile && ctx.outputs.size && ctx.outputs.has(await idOf(p))) continue; // the --output file itself
    if (isDir) {
      if (opts.recursive) await walk(p, ctx, false);
    } else if (hasImageExtension(name, opts.extensions)) {
      // a FIFO, socket or device named like an image: reported, never opened (a read could block forever)
      out.push(isFile ? found(p) : found(p, `not a regular file (${kind})`));
    } else if (opts.skipped) {
      const ext = path.extname(name).toLowerCase() || '(no extension)';
      opts.skipped.set(ext, (opts.skipped.get(ext) ?? 0) + 1);
    }
  }
}

/** dev:ino of a path ('' when it cannot be stat'ed). */
async function idOf(p: RawPath): Promise<string> {
  const st = await fs.stat(p).catch(() => null);
  return st ? `${st.dev}:${st.ino}` : '';
}

/** Expand the command-line PATH arguments into a sorted, de-duplicated list of image files. */
export async function discoverImages(inputs: string[], opts: DiscoverOptions): Promise<Found[]> {
  if (inputs.length === 0) throw new UsageError('no input: give folders, files, globs, or - to read paths from stdin');
  const expanded: { p: RawPath; stdin: boolean }[] = [];
  for (const input of inputs) {
    if (input === '-')
      expanded.push(...(await readStdinList(opts.stdin ?? process.stdin)).map((p) => ({ p, stdin: true })));
    else expanded.push({ p: input, stdin: false });
  }
  const out: Found[] = [];
  const ctx: WalkContext = {
    opts,
    seen: new Map<string, number>(),
    out,
    outputs: await identities(opts.exclude ?? []),
  };
  for (const { p: input, stdin } of expanded) {
    let st: import('node:fs').Stats | undefined;
    let failure: unknown;
    try {
      st = await fs.stat(input);
    } catch (e) {
      failure = e;
    }
    const name = show(input);
    if (st?.isDirectory()) {
      const real = await fs.realpath(input, { encoding: 'buffer' }).then(
        (b) => b.toString('hex'),
        () => '',
      );
      // a folder inside one already scanned (`find` lists folders and their contents) is not scanned again
      if (!ctx.seen.has(real)) await walk(typeof input === 'string' ? Buffer.from(input) : input, ctx, true);
      if ((ctx.seen.get(real) ?? 0) > 0) continue;
      // a folder named like an image is one bad input among others, as a missing file is; so is any
      // folder of a stdin list (`find` lists every folder)
      if (hasImageExtension(name, opts.extensions))
        out.push(found(input, 'is a folder, not an image (and it holds no images)'));
      else if (!stdin)
        throw new UsageError(
          `${name}: no images found (extensions: ${opts.extensions.join(', ')}${opts.recursive ? '' : '; not recursive'})`,
        );
    } else if (st?.isFile()) {
      if (ctx.outputs.has(`${st.dev}:${st.ino}`)) continue; // this run's own --output file (from a stdin list)
      out.push(found(input)); // named explicitly: taken whatever its extension; content decides
    } else if (st) {
      out.push(found(input, `not a regular file (${special(st)})`)); // never read: it could block
    } else if (typeof input === 'string' && fg.isDynamicPattern(input)) {
      const matches = await fg(input, { dot: false, onlyFiles: true, followSymbolicLinks: true, unique: true });
      const images = matches.filter((m) => hasImageExtension(m, opts.extensions));
      if (images.length === 0) throw new UsageError(`${input}: the pattern matches no images`);
      out.push(...images.map((m) => ({ path: m })));
    } else {
      out.push(found(input, await statFailure(input, failure))); // one missing path is one error line, not a stop
    }
  }
  // sort by code point (stable across locales) and drop duplicates (the shown path stands for the bytes)
  const byPath = new Map<string, Found>();
  for (const f of out) if (!byPath.has(f.path)) byPath.set(f.path, f);
  return [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
