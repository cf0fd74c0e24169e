// Finds the images to caption: folders (recursive by default), files, globs, or `-` (a list of paths on
// stdin). Image files are recognised by extension; hidden files and folders are skipped; symlinks are
// followed without looping (real paths of visited folders are remembered). Output is sorted.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import fg from 'fast-glob';
import { UsageError } from '../errors.js';

export interface DiscoverOptions {
  recursive: boolean;
  /** Lower-case extensions without the dot. */
  extensions: string[];
  /** Where `-` reads its list from (default: process.stdin). */
  stdin?: NodeJS.ReadableStream;
}

export interface Found {
  /** The path as the user will see it in the output (relative paths stay relative). */
  path: string;
  /** Set when the path cannot be used (e.g. a broken symlink named explicitly): reported per file. */
  error?: string;
}

const isHidden = (name: string) => name.startsWith('.') && name !== '.' && name !== '..';

export function hasImageExtension(file: string, extensions: string[]): boolean {
  const ext = path.extname(file).slice(1).toLowerCase();
  return ext.length > 0 && extensions.includes(ext);
}

async function readStdinList(stream: NodeJS.ReadableStream): Promise<string[]> {
  let text = '';
  for await (const chunk of stream) text += chunk.toString();
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
}

async function walk(dir: string, opts: DiscoverOptions, seen: Set<string>, out: Found[]): Promise<void> {
  let real: string;
  try {
    real = await fs.realpath(dir);
  } catch {
    return;
  }
  if (seen.has(real)) return; // symlink loop or a folder reached twice
  seen.add(real);
  let entries: import('node:fs').Dirent[];
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch (e) {
    out.push({ path: dir, error: `cannot read folder: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` });
    return;
  }
  for (const ent of entries) {
    if (isHidden(ent.name)) continue;
    const p = path.join(dir, ent.name);
    let isDir = ent.isDirectory();
    let isFile = ent.isFile();
    if (ent.isSymbolicLink()) {
      try {
        const st = await fs.stat(p);
        isDir = st.isDirectory();
        isFile = st.isFile();
      } catch {
        if (hasImageExtension(ent.name, opts.extensions)) out.push({ path: p, error: 'broken symbolic link' });
        continue;
      }
    }
    if (isDir) {
      if (opts.recursive) await walk(p, opts, seen, out);
    } else if (isFile && hasImageExtension(ent.name, opts.extensions)) {
      out.push({ path: p });
    }
  }
}

/** Expand the command-line PATH arguments into a sorted, de-duplicated list of image files. */
export async function discoverImages(inputs: string[], opts: DiscoverOptions): Promise<Found[]> {
  if (inputs.length === 0) throw new UsageError('no input: give folders, files, globs, or - to read paths from stdin');
  const expanded: string[] = [];
  for (const input of inputs) {
    if (input === '-') expanded.push(...(await readStdinList(opts.stdin ?? process.stdin)));
    else expanded.push(input);
  }
  const out: Found[] = [];
  const seen = new Set<string>();
  for (const input of expanded) {
    let st: import('node:fs').Stats | undefined;
    try {
      st = await fs.stat(input);
    } catch {
      st = undefined;
    }
    if (st?.isDirectory()) {
      const before = out.length;
      await walk(input, opts, seen, out);
      if (out.length === before) throw new UsageError(`${input}: no images found (extensions: ${opts.extensions.join(', ')}${opts.recursive ? '' : '; not recursive'})`);
    } else if (st?.isFile()) {
      out.push({ path: input }); // named explicitly: taken whatever its extension; content decides
    } else if (st) {
      out.push({ path: input, error: 'not a regular file (a device, FIFO or socket)' }); // never read: it could block
    } else if (fg.isDynamicPattern(input)) {
      const matches = await fg(input, { dot: false, onlyFiles: true, followSymbolicLinks: true, unique: true });
      const images = matches.filter((m) => hasImageExtension(m, opts.extensions));
      if (images.length === 0) throw new UsageError(`${input}: the pattern matches no images`);
      out.push(...images.map((m) => ({ path: m })));
    } else {
      let isLink = false;
      try {
        isLink = (await fs.lstat(input)).isSymbolicLink();
      } catch {
        /* does not exist */
      }
      if (isLink) out.push({ path: input, error: 'broken symbolic link' });
      else throw new UsageError(`${input}: no such file or folder`);
    }
  }
  // sort by code point (stable across locales) and drop duplicates
  const byPath = new Map<string, Found>();
  for (const f of out) if (!byPath.has(f.path)) byPath.set(f.path, f);
  return [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
