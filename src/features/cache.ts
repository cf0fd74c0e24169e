// The feature cache: a folder of immutable binary shards plus manifest.json.
//
//   <dir>/manifest.json          kind 'captioner.features', what computed the vectors (encoder info, weights
//                                fingerprint, preprocessing, layer), dtype, per-image shape, a `fingerprint` of
//                                all that, the shards (file, rows, keys in row order) and the failed images.
//   <dir>/shard-<pid>-<t>-<n>.bin rows of little-endian float32 or float16, row-major, no header.
//
// Image key -> (shard, row) is the position of the key in its shard's `keys` list. Writers append: each
// shard is written atomically (temp + fsync + rename), then the manifest is rewritten atomically under a
// lock file, so a crash (even kill -9) leaves a manifest that only names complete shards. Several
// writers (e.g. `--shard i/n` processes) may share a folder: every manifest update re-reads it under the
// lock and merges. Shards left unreferenced by a crashed writer are deleted by the next writer.
import { closeSync, openSync, readSync, promises as fs } from 'node:fs';
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import type { ImageErrorKind } from '../caption/types.js';
import { DataError } from '../errors.js';
import { readJson, writeFileAtomic, writeJsonAtomic } from '../util/fsx.js';
import { checkStageFolder } from '../util/stagedir.js';
import type { EncoderInfo, Preprocessing } from './encoder.js';

export const FEATURES_KIND = 'captioner.features';
export const FEATURES_VERSION = 1;
export const MANIFEST = 'manifest.json';
const LOCK = 'manifest.lock';

export type FeatureDtype = 'float32' | 'float16';

export interface ShardEntry {
  file: string;
  rows: number;
  /** Image keys in row order. */
  keys: string[];
}

export interface FailedImage {
  /** Image key (as in the prepared dataset). */
  image: string;
  /** The file that was read. */
  file: string;
  reason: string;
  kind?: ImageErrorKind;
}

export interface FeaturesManifest {
  kind: typeof FEATURES_KIND;
  version: number;
  /** cacheFingerprint(...) of the settings below: readers compare it with what they expect. */
  fingerprint: string;
  encoder: { name: string; fingerprint: string; runtime: string; detail: string };
  /** 'random' (untrained demo weights) or the weights / model file. */
  weights: string;
  weightsFingerprint: string;
  layer: string;
  preprocessing: Preprocessing;
  dtype: FeatureDtype;
  /** Per-image shape, e.g. [4096]. */
  shape: number[];
  /** Number of cached images. */
  count: number;
  shards: ShardEntry[];
  failed: FailedImage[];
  created: string;
  updated: string;
}

/** What a cache holds, independent of where or when it was computed. */
export interface CacheSpec {
  encoder: Pick<EncoderInfo, 'name' | 'fingerprint' | 'runtime' | 'detail' | 'weights' | 'weightsFingerprint' | 'layer' | 'preprocessing' | 'shape'>;
  dtype: FeatureDtype;
}

/** Fingerprint of a cache's configuration: encoder fingerprint (weights + layer) + preprocessing + dtype. */
export function cacheFingerprint(spec: CacheSpec): string {
  const e = spec.encoder;
  const canonical = JSON.stringify({ encoder: e.fingerprint, layer: e.layer, shape: e.shape, preprocessing: sortKeys(e.preprocessing), dtype: spec.dtype });
  return `sha256:${createHash('sha256').update(canonical).digest('hex')}`;
}

function sortKeys(o: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

const bytesPer = (dtype: FeatureDtype) => (dtype === 'float16' ? 2 : 4);
const rowLength = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

// ---------------------------------------------------------------------------------------------------
// float16 (IEEE 754 half) conversion, round to nearest even

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function toHalf(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / nan
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow -> 0
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++; // a carry into the exponent is still correct (up to inf)
  return sign | half;
}

export function fromHalf(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Rows -> little-endian bytes in `dtype`. */
export function encodeRows(rows: readonly Float32Array[], dtype: FeatureDtype): Uint8Array {
  const n = rows.reduce((s, r) => s + r.length, 0);
  const out = new Uint8Array(n * bytesPer(dtype));
  const dv = new DataView(out.buffer);
  let i = 0;
  for (const r of rows)
    for (let k = 0; k < r.length; k++, i++) {
      if (dtype === 'float16') dv.setUint16(i * 2, toHalf(r[k]), true);
      else dv.setFloat32(i * 4, r[k], true);
    }
  return out;
}

function decodeRow(bytes: Uint8Array, dtype: FeatureDtype): Float32Array {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.byteLength / bytesPer(dtype);
  const out = new Float32Array(n);
  if (dtype === 'float16') for (let i = 0; i < n; i++) out[i] = fromHalf(dv.getUint16(i * 2, true));
  else for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Manifest I/O

async function readManifest(dir: string): Promise<FeaturesManifest | null> {
  const file = path.join(dir, MANIFEST);
  try {
    await fs.access(file);
  } catch {
    return null;
  }
  const m = await readJson<FeaturesManifest>(file, 'feature cache manifest');
  if (!m || m.kind !== FEATURES_KIND) throw new DataError(`${file}: not a feature cache manifest (kind ${JSON.stringify(m?.kind)}, expected "${FEATURES_KIND}")`);
  if (m.version !== FEATURES_VERSION) throw new DataError(`${file}: feature cache version ${m.version} is not supported (expected ${FEATURES_VERSION}); recompute with \`captioner features\``);
  if (!Array.isArray(m.shards) || !Array.isArray(m.shape) || (m.dtype !== 'float32' && m.dtype !== 'float16')) throw new DataError(`${file}: malformed feature cache manifest (shards, shape or dtype missing)`);
  m.failed ??= [];
  return m;
}

function describeSpec(m: Pick<FeaturesManifest, 'encoder' | 'layer' | 'dtype' | 'weights' | 'preprocessing'>): string {
  return `${m.encoder.name} ${m.layer}, weights ${m.weights === 'random' ? 'random' : path.basename(m.weights)}, ${m.dtype}, ${m.preprocessing.interpolation} resize`;
}

// ---------------------------------------------------------------------------------------------------
// Reader

export interface FeatureCache {
  dir: string;
  manifest: FeaturesManifest;
  /** Values per image (product of manifest.shape). */
  dim: number;
  has(key: string): boolean;
  /** The cached vector of `key` as float32 (DataError when absent). */
  get(key: string): Float32Array;
  /** Cached image keys, sorted. */
  keys(): string[];
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
  const manifest = await readManifest(dir);
  if (!manifest) throw new DataError(`${dir}: no feature cache here (${MANIFEST} missing); run \`captioner features\` first`);
  const where = path.join(dir, MANIFEST);
  if (expect.fingerprint && expect.fingerprint !== manifest.fingerprint) {
    throw new DataError(`${where}: these features were computed with different settings (${describeSpec(manifest)}; fingerprint ${manifest.fingerprint.slice(0, 19)}…, expected ${expect.fingerprint.slice(0, 19)}…); recompute with \`captioner features\` into a fresh --out`);
  }
  if (expect.layer && expect.layer !== manifest.layer) throw new DataError(`${where}: features are from layer ${manifest.layer}, expected ${expect.layer}`);
  if (expect.shape && expect.shape.join('x') !== manifest.shape.join('x')) throw new DataError(`${where}: features have shape [${manifest.shape}], expected [${expect.shape}]`);
  const dim = rowLength(manifest.shape);
  const rowBytes = dim * bytesPer(manifest.dtype);
  const index = new Map<string, { shard: number; row: number }>();
  for (let s = 0; s < manifest.shards.length; s++) {
    const sh = manifest.shards[s];
    const file = path.join(dir, sh.file);
    let size: number;
    try {
      size = (await fs.stat(file)).size;
    } catch {
      throw new DataError(`${where}: shard ${sh.file} is missing; the cache is damaged, recompute with \`captioner features\``);
    }
    if (size !== sh.rows * rowBytes || sh.keys.length !== sh.rows) throw new DataError(`${file}: ${size} bytes, expected ${sh.rows} rows of ${rowBytes} bytes; the cache is damaged, recompute with \`captioner features\``);
    sh.keys.forEach((k, row) => {
      if (!index.has(k)) index.set(k, { shard: s, row });
    });
  }
  const fds = new Map<number, number>();
  const fdOf = (s: number) => {
    let fd = fds.get(s);
    if (fd === undefined) {
      fd = openSync(path.join(dir, manifest.shards[s].file), 'r');
      fds.set(s, fd);
    }
    return fd;
  };
  return {
    dir,
    manifest,
    dim,
    has: (key) => index.has(key),
    get(key) {
      const at = index.get(key);
      if (!at) throw new DataError(`${dir}: no cached features for image "${key}"${manifest.failed.some((f) => f.image === key) ? ' (it failed to decode; see failed in manifest.json)' : ''}`);
      const buf = new Uint8Array(rowBytes);
      const got = readSync(fdOf(at.shard), buf, 0, rowBytes, at.row * rowBytes);
      if (got !== rowBytes) throw new DataError(`${path.join(dir, manifest.shards[at.shard].file)}: short read at row ${at.row}`);
      return decodeRow(buf, manifest.dtype);
    },
    keys: () => [...index.keys()].sort(),
    close() {
      for (const fd of fds.values()) closeSync(fd);
      fds.clear();
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Writer

export interface CacheWriter {
  readonly dir: string;
  readonly fingerprint: string;
  /** Whether `key` is cached (by any writer, as of the last manifest update). */
  has(key: string): boolean;
  /** Buffer one vector; writes a shard when `shardSize` rows are pending. */
  add(key: string, vector: Float32Array): Promise<void>;
  /** Record an image that could not be encoded (written with the next flush). */
  fail(entry: FailedImage): void;
  /** Write pending rows as a shard (if any) and pending failures, then update the manifest. */
  flush(): Promise<void>;
  /** Rows waiting to be flushed. */
  pending(): number;
  /** Flush and release. */
  close(): Promise<FeaturesManifest>;
}

export interface WriterOptions {
  /** Rows per shard file. */
  shardSize: number;
}

/**
 * Open (creating if needed) a cache folder for appending. An existing cache must have the same
 * fingerprint (DataError otherwise: delete it or choose another folder).
 */
export async function openCacheWriter(dir: string, spec: CacheSpec, opts: WriterOptions): Promise<CacheWriter> {
  await checkStageFolder(dir, { kind: FEATURES_KIND, option: '--out or features.out' });
  await fs.mkdir(dir, { recursive: true });
  const fingerprint = cacheFingerprint(spec);
  const dim = rowLength(spec.encoder.shape);
  const cached = new Set<string>();
  const now = () => new Date().toISOString();
  const fresh = (): FeaturesManifest => ({
    kind: FEATURES_KIND,
    version: FEATURES_VERSION,
    fingerprint,
    encoder: { name: spec.encoder.name, fingerprint: spec.encoder.fingerprint, runtime: spec.encoder.runtime, detail: spec.encoder.detail },
    weights: spec.encoder.weights,
    weightsFingerprint: spec.encoder.weightsFingerprint,
    layer: spec.encoder.layer,
    preprocessing: spec.encoder.preprocessing,
    dtype: spec.dtype,
    shape: [...spec.encoder.shape],
    count: 0,
    shards: [],
    failed: [],
    created: now(),
    updated: now(),
  });
  const check = (m: FeaturesManifest) => {
    if (m.fingerprint !== fingerprint) {
      throw new DataError(
        `${path.join(dir, MANIFEST)}: this folder holds features computed with different settings (${describeSpec(m)}) than now (${describeSpec({ ...fresh() })}); ` +
          'delete the folder or choose another --out',
      );
    }
  };
  const absorb = (m: FeaturesManifest) => {
    for (const s of m.shards) for (const k of s.keys) cached.add(k);
  };

  // first look (and clean up after crashed writers) under the lock
  await withLock(dir, async () => {
    const m = await readManifest(dir);
    if (m) {
      check(m);
      absorb(m);
    }
    await removeOrphans(dir, m);
  });

  let rows: Float32Array[] = [];
  let keys: string[] = [];
  let pendingKeys = new Set<string>();
  let failures: FailedImage[] = [];
  const succeeded = new Set<string>();
  let seq = 0;
  let last: FeaturesManifest | null = null;
  let closed = false;

  const flush = async (): Promise<void> => {
    if (!rows.length && !failures.length && last) return;
    let shard: ShardEntry | null = null;
    if (rows.length) {
      const file = `shard-${process.pid}-${Date.now().toString(36)}-${seq++}.bin`;
      await writeFileAtomic(path.join(dir, file), encodeRows(rows, spec.dtype));
      shard = { file, rows: rows.length, keys };
    }
    const newFailures = failures;
    const done = succeeded;
    rows = [];
    keys = [];
    pendingKeys = new Set();
    failures = [];
    await withLock(dir, async () => {
      const m = (await readManifest(dir)) ?? fresh();
      check(m);
      if (shard) m.shards.push(shard);
      absorb(m);
      // failures: latest per image wins; images cached since are no longer failures
      const byImage = new Map(m.failed.map((f) => [f.image, f]));
      for (const f of newFailures) byImage.set(f.image, f);
      for (const k of done) byImage.delete(k);
      m.failed = [...byImage.values()].filter((f) => !cached.has(f.image)).sort((a, b) => (a.image < b.image ? -1 : a.image > b.image ? 1 : 0));
      m.count = new Set(m.shards.flatMap((s) => s.keys)).size;
      m.updated = now();
      await writeJsonAtomic(path.join(dir, MANIFEST), m);
      last = m;
    });
  };

  return {
    dir,
    fingerprint,
    has: (key) => cached.has(key) || pendingKeys.has(key),
    async add(key, vector) {
      if (closed) throw new Error('cache writer used after close()');
      if (vector.length !== dim) throw new DataError(`feature cache: vector for ${key} has ${vector.length} values, expected ${dim}`);
      for (let i = 0; i < vector.length; i++) if (!Number.isFinite(vector[i])) throw new DataError(`feature cache: vector for ${key} has a non-finite value at ${i}; refusing to cache it`);
      if (cached.has(key) || pendingKeys.has(key)) return; // already cached: never store a key twice
      rows.push(vector);
      keys.push(key);
      pendingKeys.add(key);
      succeeded.add(key);
      if (rows.length >= opts.shardSize) await flush();
    },
    fail(entry) {
      failures.push(entry);
      succeeded.delete(entry.image);
    },
    flush,
    pending: () => rows.length,
    async close() {
      await flush();
      closed = true;
      return last!;
    },
  };
}

/** Delete shard/temp files no manifest names whose writer process is gone. */
async function removeOrphans(dir: string, m: FeaturesManifest | null): Promise<void> {
  const referenced = new Set(m?.shards.map((s) => s.file) ?? []);
  for (const name of await fs.readdir(dir)) {
    let pid: number | undefined;
    const shard = /^shard-(\d+)-[a-z0-9]+-\d+\.bin$/.exec(name);
    const tmp = /\.(\d+)\.\d+\.tmp$/.exec(name);
    if (shard && !referenced.has(name)) pid = Number(shard[1]);
    else if (tmp) pid = Number(tmp[1]);
    if (pid !== undefined && !alive(pid)) await fs.rm(path.join(dir, name), { force: true });
  }
}

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Run `fn` holding <dir>/manifest.lock (an exclusive file holding our pid; stale locks of dead processes are broken). */
async function withLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const lock = path.join(dir, LOCK);
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      const h = await fs.open(lock, 'wx');
      await h.writeFile(String(process.pid));
      await h.close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new DataError(`${lock}: cannot create the cache lock (${(e as NodeJS.ErrnoException).code})`);
      const readOwner = async () => Number((await fs.readFile(lock, 'utf8').catch(() => '')).trim());
      const owner = await readOwner();
      if (Number.isInteger(owner) && owner > 0 && !alive(owner)) {
        if ((await readOwner()) === owner) await fs.rm(lock, { force: true }); // still the dead one's lock
        continue;
      }
      if (Date.now() > deadline) throw new DataError(`${lock}: the feature cache is locked by process ${owner || '?'}; if no other \`captioner features\` is running, delete the lock file`);
      await new Promise((r) => setTimeout(r, 25 + Math.random() * 50));
    }
  }
  try {
    return await fn();
  } finally {
    await fs.rm(lock, { force: true });
  }
}

/** Size check helper for tests and tools: bytes a shard of `rows` rows takes. */
export function shardBytes(rows: number, shape: readonly number[], dtype: FeatureDtype): number {
  return rows * rowLength(shape) * bytesPer(dtype);
}
