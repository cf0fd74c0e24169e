// The feature cache's reader: open a cache (checked against what the caller expects) and read rows by key.
// Part of src/features/cache/, the one module that writes, reads and versions the feature cache (entry:
// src/features/cache.ts).
import { closeSync, openSync, readSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { DataError } from '../../errors.js';
import { decodeRow } from './codec.js';
import { byName, bytesPer, MANIFEST, rowLength, type ChunkEntry, type FeaturesManifest } from './format.js';
import { describeSpec, merge, readSnapshot } from './manifest.js';

export interface FeatureCache {
  dir: string;
  /** The merged view of manifest.json and every writer's fragment. */
  manifest: FeaturesManifest;
  /** Values per image (product of manifest.shape). */
  dim: number;
  /** Bytes of one stored row (dim x 2 for float16, dim x 4 for float32). */
  rowBytes: number;
  has(key: string): boolean;
  /** The cached vector of `key` as float32, a new array read from its chunk file (DataError when absent). */
  get(key: string): Float32Array;
  /** The stored bytes of `key`'s row (manifest.dtype, little-endian), read into `into` when given. */
  readRaw(key: string, into?: Uint8Array): Uint8Array;
  /** Cached image keys, sorted. */
  keys(): string[];
  /** `keys` reordered by where their rows lie (chunk, then row), for sequential reads. Unknown keys last. */
  byLocation(keys: Iterable<string>): string[];
  close(): void;
}

export interface ExpectCache {
  /** cacheFingerprint the caller computed from its config. */
  fingerprint?: string;
  layer?: string;
  shape?: number[];
}

/** Open a feature cache for reading. Refuses (DataError) a cache that does not match `expect`. */
export async function openFeatureCache(dir: string, expect: ExpectCache = {}): Promise<FeatureCache> {
  const snap = await readSnapshot(dir);
  if (!snap)
    throw new DataError(`${dir}: no feature cache here (${MANIFEST} missing); run \`captioner features\` first`);
  const manifest = merge(snap);
  const where = path.join(dir, MANIFEST);
  if (expect.fingerprint && expect.fingerprint !== manifest.fingerprint) {
    throw new DataError(
      `${where}: these features were computed with different settings (${describeSpec(manifest)}; fingerprint ${manifest.fingerprint.slice(0, 19)}…, expected ${expect.fingerprint.slice(0, 19)}…); recompute with \`captioner features\` into a fresh --out`,
    );
  }
  if (expect.layer && expect.layer !== manifest.layer)
    throw new DataError(`${where}: features are from layer ${manifest.layer}, expected ${expect.layer}`);
  if (expect.shape && expect.shape.join('x') !== manifest.shape.join('x'))
    throw new DataError(`${where}: features have shape [${manifest.shape}], expected [${expect.shape}]`);
  const rowBytes = rowLength(manifest.shape) * bytesPer(manifest.dtype);
  // a damaged chunk is tolerated only when every key it holds is also in an intact one (a rerun of
  // `features` recomputes the keys of damaged chunks, so it repairs the cache)
  let damage: string | null = null;
  const intact: ChunkEntry[] = [];
  for (const ch of manifest.chunks) {
    const file = path.join(dir, ch.file);
    const size = await fs.stat(file).then(
      (st) => st.size,
      () => -1,
    );
    if (size >= 0 && size === ch.rows * rowBytes && ch.keys.length === ch.rows) intact.push(ch);
    else
      damage ??=
        size < 0
          ? `${where}: chunk ${ch.file} is missing`
          : `${file}: ${size} bytes, expected ${ch.rows} rows of ${rowBytes} bytes`;
  }
  if (damage) {
    const have = new Set(intact.flatMap((ch) => ch.keys));
    if (manifest.chunks.some((ch) => !intact.includes(ch) && ch.keys.some((k) => !have.has(k)))) {
      throw new DataError(
        `${damage}; the cache is damaged, run \`captioner features\` again to recompute the lost images`,
      );
    }
  }
  manifest.chunks = intact;
  return openIndexed(dir, manifest, rowBytes);
}

function openIndexed(dir: string, manifest: FeaturesManifest, rowBytes: number): FeatureCache {
  const dim = rowLength(manifest.shape);
  const index = new Map<string, { chunk: number; row: number }>();
  manifest.chunks.forEach((ch, s) => {
    ch.keys.forEach((k, row) => {
      if (!index.has(k)) index.set(k, { chunk: s, row });
    });
  });
  const fds = new Map<number, number>();
  const fdOf = (s: number) => {
    let fd = fds.get(s);
    if (fd === undefined) {
      fd = openSync(path.join(dir, manifest.chunks[s].file), 'r');
      fds.set(s, fd);
    }
    return fd;
  };
  const readRaw = (key: string, into?: Uint8Array): Uint8Array => {
    const at = index.get(key);
    if (!at)
      throw new DataError(
        `${dir}: no cached features for image "${key}"${manifest.failed.some((f) => f.image === key) ? ' (it failed to decode; see failed in the cache manifest)' : ''}`,
      );
    const buf = into ? into.subarray(0, rowBytes) : new Uint8Array(rowBytes);
    if (buf.length !== rowBytes) throw new Error(`readRaw: buffer of ${into!.length} bytes for a row of ${rowBytes}`);
    const fd = fdOf(at.chunk);
    for (let done = 0; done < rowBytes; ) {
      const got = readSync(fd, buf, done, rowBytes - done, at.row * rowBytes + done);
      if (got <= 0)
        throw new DataError(
          `${path.join(dir, manifest.chunks[at.chunk].file)}: short read at row ${at.row}; the chunk file was changed after the cache was opened, run \`captioner features\` again`,
        );
      done += got;
    }
    return buf;
  };
  return {
    dir,
    manifest,
    dim,
    rowBytes,
    has: (key) => index.has(key),
    get: (key) => decodeRow(readRaw(key), manifest.dtype),
    readRaw,
    keys: () => [...index.keys()].sort(),
    byLocation(keys) {
      const at = (k: string) => index.get(k) ?? { chunk: Infinity, row: 0 };
      return [...keys].sort((a, b) => {
        const x = at(a);
        const y = at(b);
        return x.chunk - y.chunk || x.row - y.row || (x.chunk === Infinity ? byName(a, b) : 0);
      });
    },
    close() {
      for (const fd of fds.values()) closeSync(fd);
      fds.clear();
    },
  };
}
