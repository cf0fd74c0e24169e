// Generic tensor files (the run folder, src/model/runfolder.ts, and the optimizer state use them): a folder with <name>.json (index: shapes, byte offsets, metadata) and
// <name>.bin (little-endian float32, concatenated). Folders are written whole under a temporary name and
// swapped in by rename, so a reader never sees a half-written checkpoint.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ModelError } from '../errors.js';
import { ensureDir, exists } from '../util/fsx.js';

export interface NamedArray {
  name: string;
  shape: number[];
  data: Float32Array;
}

interface TensorIndex {
  format: string;
  version: 1;
  meta: Record<string, unknown>;
  tensors: { name: string; shape: number[]; offset: number; length: number }[];
  bytes: number;
}

let tmpCounter = 0;

// Swap protocol (dir = best/ or last/): write every file into <dir>.tmp-*, fsync, rename it to <dir>.new-*
// (a complete copy from then on), rename the live <dir> to <dir>.old-*, rename .new-* to <dir>, delete
// .old-*. A kill at any point leaves <dir>, or a complete .old-* / .new-* that recoverDir puts back.

/** Write `files` (name -> content) as folder `dir`, replacing any previous folder in one rename. */
export async function writeDirAtomic(dir: string, files: Record<string, string | Uint8Array>): Promise<void> {
  const parent = path.dirname(dir);
  await ensureDir(parent);
  const id = `${process.pid}-${tmpCounter++}`;
  const tmp = `${dir}.tmp-${id}`;
  const fresh = `${dir}.new-${id}`;
  try {
    await fs.rm(tmp, { recursive: true, force: true });
    await fs.mkdir(tmp);
    for (const [name, data] of Object.entries(files)) {
      const h = await fs.open(path.join(tmp, name), 'w');
      try {
        await h.writeFile(data);
        await h.sync();
      } finally {
        await h.close();
      }
    }
    await fs.rename(tmp, fresh);
  } catch (e) {
    await fs.rm(tmp, { recursive: true, force: true }).catch(() => {});
    throw e;
  }
  const old = `${dir}.old-${id}`;
  const had = await exists(dir);
  if (had) await fs.rename(dir, old);
  await fs.rename(fresh, dir);
  if (had) await fs.rm(old, { recursive: true, force: true });
}

/**
 * Finish or undo a swap that a kill interrupted (see writeDirAtomic). When `dir` is missing, the
 * complete previous folder (.old-*) is put back, or failing that the complete new one (.new-*); then
 * every leftover (.tmp-*: partial, .new-*, .old-*) is deleted. Returns what it did, for a log line.
 */
export async function recoverDir(dir: string): Promise<string | null> {
  const parent = path.dirname(dir);
  const base = path.basename(dir);
  let names: string[];
  try {
    names = await fs.readdir(parent);
  } catch {
    return null;
  }
  const left = (tag: string) => names.filter((n) => n.startsWith(`${base}.${tag}-`)).sort();
  const olds = left('old');
  const news = left('new');
  let did: string | null = null;
  if (!(await exists(dir))) {
    const pick = olds[olds.length - 1] ?? news[news.length - 1];
    if (pick) {
      await fs.rename(path.join(parent, pick), dir);
      did = `${dir}: restored from ${pick} (a checkpoint write was interrupted)`;
    }
  }
  for (const n of [...left('tmp'), ...olds, ...news]) {
    const p = path.join(parent, n);
    if (p !== dir && (await exists(p))) await fs.rm(p, { recursive: true, force: true });
  }
  return did;
}

/** Encode named arrays as an index JSON and one binary blob. */
export function encodeTensors(
  format: string,
  meta: Record<string, unknown>,
  arrays: NamedArray[],
): { index: string; bin: Uint8Array } {
  let bytes = 0;
  const tensors = arrays.map((a) => {
    const size = a.shape.reduce((x, y) => x * y, 1);
    if (size !== a.data.length)
      throw new ModelError(`${a.name}: ${a.data.length} values for shape [${a.shape.join(', ')}]`);
    const e = { name: a.name, shape: a.shape, offset: bytes, length: a.data.length };
    bytes += a.data.length * 4;
    return e;
  });
  const bin = new Uint8Array(bytes);
  const view = new DataView(bin.buffer);
  arrays.forEach((a, i) => {
    let o = tensors[i].offset;
    for (let k = 0; k < a.data.length; k++, o += 4) view.setFloat32(o, a.data[k], true);
  });
  const index: TensorIndex = { format, version: 1, meta, tensors, bytes };
  return { index: JSON.stringify(index, null, 1) + '\n', bin };
}

/** Read `<dir>/<base>.json` + `<dir>/<base>.bin`; checks format, sizes and bounds. */
export async function readTensors(
  dir: string,
  base: string,
  format: string,
): Promise<{ meta: Record<string, unknown>; arrays: Map<string, NamedArray> }> {
  const indexFile = path.join(dir, `${base}.json`);
  const binFile = path.join(dir, `${base}.bin`);
  let index: TensorIndex;
  try {
    index = JSON.parse(await fs.readFile(indexFile, 'utf8')) as TensorIndex;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ModelError(
      `${indexFile}: cannot read ${code === 'ENOENT' ? '(no such file)' : (code ?? (e as Error).message)}`,
    );
  }
  if (index?.format !== format || index.version !== 1 || !Array.isArray(index.tensors)) {
    throw new ModelError(
      `${indexFile}: not a ${format} index (format ${JSON.stringify(index?.format)}, version ${JSON.stringify(index?.version)})`,
    );
  }
  let buf: Buffer;
  try {
    buf = await fs.readFile(binFile);
  } catch (e) {
    throw new ModelError(`${binFile}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (buf.length !== index.bytes)
    throw new ModelError(`${binFile}: ${buf.length} bytes, the index says ${index.bytes} (truncated or mismatched)`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const arrays = new Map<string, NamedArray>();
  for (const t of index.tensors) {
    const size = t.shape.reduce((x, y) => x * y, 1);
    if (size !== t.length || t.offset < 0 || t.offset + t.length * 4 > buf.length)
      throw new ModelError(`${indexFile}: tensor "${t.name}" is out of bounds or inconsistent`);
    const data = new Float32Array(t.length);
    for (let k = 0, o = t.offset; k < t.length; k++, o += 4) data[k] = view.getFloat32(o, true);
    arrays.set(t.name, { name: t.name, shape: t.shape, data });
  }
  return { meta: index.meta ?? {}, arrays };
}
