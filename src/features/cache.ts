// The feature cache: a folder of immutable binary shards, a base manifest and one manifest fragment per
// writer. Nothing a writer wrote is ever rewritten by another writer, so no lock is needed and writers may
// run on different hosts or in different PID namespaces (Slurm nodes, Kubernetes pods) on a shared folder.
//
//   <dir>/manifest.json            kind 'captioner.features', version 2: what computed the vectors (encoder
//                                  info, weights fingerprint, preprocessing, layer), dtype, per-image shape and a
//                                  `fingerprint` of all that. Created once (atomic create-if-absent) by the
//                                  first writer, never rewritten (a version 1 cache keeps its shards here).
//   <dir>/part-<writer>.json       one writer's fragment: its shards (file, rows, keys in row order) and its
//                                  failed images. Rewritten atomically (temp + fsync + rename) only by its own
//                                  writer, after each shard and as a heartbeat; `closed` once the writer finished.
//   <dir>/shard-<writer>-<n>.bin   rows of little-endian float32 or float16, row-major, no header.
//
// <writer> is hostname_pid_random, unique across hosts and PID namespaces. Readers merge the base and
// all fragments (sorted by name): the first shard holding a key wins, so overlapping writers (two
// processes on the same --shard) only cost disk, and the result is deterministic. A writer writes its
// shard, then its fragment, so a crash (even kill -9) leaves fragments that only name complete shards.
// Clean-up (when a writer opens) deletes only files no fragment names whose writer provably finished:
// its fragment says closed, or it ran on this host in this PID namespace and its pid is gone, or its
// heartbeat is older than STALE_MS (other hosts / namespaces).
import { closeSync, openSync, readFileSync, readlinkSync, readSync, promises as fs } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ImageErrorKind } from './image.js';
import { DataError, WriteError } from '../errors.js';
import { ensureDir, ioReason, readJson, writeFileAtomic, writeJsonAtomic } from '../util/fsx.js';
import { checkStageFolder } from '../util/stagedir.js';
import type { EncoderInfo, Preprocessing } from './encoder.js';

export const FEATURES_KIND = 'captioner.features';
export const FEATURES_VERSION = 2;
export const MANIFEST = 'manifest.json';
const PART_KIND = 'captioner.features.part';
/** Lock file of version 1 writers: taken only to upgrade a version 1 manifest in place. */
const V1_LOCK = 'manifest.lock';
/** A writer rewrites its fragment at least this often while open. */
export const HEARTBEAT_MS = 30_000;
/** A writer whose fragment (or, before it has one, whose files) did not change for this long is gone. */
export const STALE_MS = 10 * 60_000;

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
  /** Fragment files merged into this view (readers); absent in manifest.json itself. */
  parts?: string[];
}

/** Who wrote a fragment: enough to tell, from another process, whether it may still be running. */
export interface WriterIdentity {
  id: string;
  host: string;
  pid: number;
  /** Linux: boot id and PID namespace (pid liveness is only meaningful when both match ours). */
  boot?: string;
  pidns?: string;
}

/** One writer's contribution (part-<id>.json). */
export interface ManifestPart {
  kind: typeof PART_KIND;
  version: number;
  fingerprint: string;
  writer: WriterIdentity;
  /** True once the writer finished (its unreferenced files, if any, are garbage). */
  closed: boolean;
  shards: ShardEntry[];
  failed: FailedImage[];
  started: string;
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

/** One row -> little-endian bytes in `dtype`, written into `out` at byte `offset`. */
function encodeRowInto(row: Float32Array, dtype: FeatureDtype, out: Uint8Array, offset: number): void {
  const dv = new DataView(out.buffer, out.byteOffset + offset, row.length * bytesPer(dtype));
  if (dtype === 'float16') for (let k = 0; k < row.length; k++) dv.setUint16(k * 2, toHalf(row[k]), true);
  else for (let k = 0; k < row.length; k++) dv.setFloat32(k * 4, row[k], true);
}

/** Rows -> little-endian bytes in `dtype`. */
export function encodeRows(rows: readonly Float32Array[], dtype: FeatureDtype): Uint8Array {
  const n = rows.reduce((s, r) => s + r.length, 0);
  const out = new Uint8Array(n * bytesPer(dtype));
  let at = 0;
  for (const r of rows) {
    encodeRowInto(r, dtype, out, at);
    at += r.length * bytesPer(dtype);
  }
  return out;
}

/** float16 bits -> float32 value, for all 65536 patterns (256 KB, built on first use). */
let halfTable: Float32Array | null = null;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Stored bytes of one or more rows -> float32 values (into `out` when given, else a new array). */
export function decodeRow(bytes: Uint8Array, dtype: FeatureDtype, out?: Float32Array): Float32Array {
  const n = bytes.byteLength / bytesPer(dtype);
  const dst = out ?? new Float32Array(n);
  if (dst.length < n) throw new Error(`decodeRow: output of ${dst.length} values for ${n}`);
  if (dtype === 'float16') {
    if (!halfTable) {
      halfTable = new Float32Array(65536);
      for (let h = 0; h < 65536; h++) halfTable[h] = fromHalf(h);
    }
    const t = halfTable;
    if (LITTLE_ENDIAN && bytes.byteOffset % 2 === 0) {
      const u = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
      for (let i = 0; i < n; i++) dst[i] = t[u[i]];
    } else for (let i = 0; i < n; i++) dst[i] = t[bytes[2 * i] | (bytes[2 * i + 1] << 8)];
  } else if (LITTLE_ENDIAN && bytes.byteOffset % 4 === 0) {
    dst.set(new Float32Array(bytes.buffer, bytes.byteOffset, n));
  } else {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < n; i++) dst[i] = dv.getFloat32(i * 4, true);
  }
  return dst;
}

// ---------------------------------------------------------------------------------------------------
// Manifest I/O

const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const PART_RE = /^part-([A-Za-z0-9_]+)\.json$/;
/** Files a writer owns, including the temp files of their atomic writes (`<name>.<...>.tmp`, or a dotted `.<name>...tmp...`). */
const OWNED_RE = /^(\.?)(?:shard-([A-Za-z0-9_]+)-\d+\.bin|part-([A-Za-z0-9_]+)\.json|head-([A-Za-z0-9_]+)\.json)([.~-].*tmp.*)?$/;
const V1_SHARD_RE = /^shard-\d+-[a-z0-9]+-\d+\.bin$/;
const V1_TMP_RE = /^manifest\.json\..*\.tmp$/;

async function readBase(dir: string): Promise<FeaturesManifest | null> {
  const file = path.join(dir, MANIFEST);
  try {
    await fs.access(file);
  } catch {
    return null;
  }
  const m = await readJson<FeaturesManifest>(file, 'feature cache manifest');
  if (!m || m.kind !== FEATURES_KIND) throw new DataError(`${file}: not a feature cache manifest (kind ${JSON.stringify(m?.kind)}, expected "${FEATURES_KIND}")`);
  if (m.version !== 1 && m.version !== FEATURES_VERSION) throw new DataError(`${file}: feature cache version ${m.version} is not supported (this captioner reads versions 1 and ${FEATURES_VERSION}); recompute with \`captioner features\` into a fresh --out`);
  if (!Array.isArray(m.shape) || (m.dtype !== 'float32' && m.dtype !== 'float16')) throw new DataError(`${file}: malformed feature cache manifest (shape or dtype missing)`);
  if (m.version === 1 && !Array.isArray(m.shards)) throw new DataError(`${file}: malformed feature cache manifest (shards missing)`);
  m.shards ??= [];
  m.failed ??= [];
  return m;
}

async function readPart(file: string, fingerprint: string): Promise<ManifestPart> {
  const p = await readJson<ManifestPart>(file, 'feature cache fragment');
  if (!p || p.kind !== PART_KIND || p.version !== FEATURES_VERSION || !Array.isArray(p.shards) || !Array.isArray(p.failed) || !p.writer) {
    throw new DataError(`${file}: malformed feature cache fragment; delete it (its images will be computed again)`);
  }
  if (p.fingerprint !== fingerprint) throw new DataError(`${file}: this fragment was computed with other settings than ${MANIFEST}; delete it (its images will be computed again)`);
  return p;
}

interface Snapshot {
  base: FeaturesManifest;
  /** Fragment file name -> fragment, sorted by name. */
  parts: Map<string, ManifestPart>;
}

async function readSnapshot(dir: string): Promise<Snapshot | null> {
  const base = await readBase(dir);
  if (!base) return null;
  const parts = new Map<string, ManifestPart>();
  for (const name of (await fs.readdir(dir)).filter((n) => PART_RE.test(n)).sort(byName)) {
    let p: ManifestPart;
    try {
      p = await readPart(path.join(dir, name), base.fingerprint);
    } catch (e) {
      if (e instanceof DataError && /ENOENT/.test(e.message)) continue; // an empty fragment cleaned up meanwhile
      throw e;
    }
    parts.set(name, p);
  }
  return { base, parts };
}

/** The merged view: base shards, then each fragment's (by name); failures minus anything cached. */
function merge(snap: Snapshot): FeaturesManifest {
  // shards: base first, then each fragment's, fragments by file name (the first copy of a key wins)
  const shards = [...snap.base.shards, ...[...snap.parts.values()].flatMap((p) => p.shards)];
  const cached = new Set(shards.flatMap((s) => s.keys));
  // failures: the latest attempt per image wins (writers keep their timestamps after all they saw)
  const failed = new Map<string, FailedImage>();
  for (const f of snap.base.failed) failed.set(f.image, f);
  let updated = snap.base.updated;
  for (const p of [...snap.parts.values()].sort((a, b) => byName(a.updated, b.updated) || byName(a.writer.id, b.writer.id))) {
    for (const f of p.failed) failed.set(f.image, f);
    if (p.updated > updated) updated = p.updated;
  }
  return {
    ...snap.base,
    version: FEATURES_VERSION,
    count: cached.size,
    shards,
    failed: [...failed.values()].filter((f) => !cached.has(f.image)).sort((a, b) => byName(a.image, b.image)),
    updated,
    parts: [...snap.parts.keys()],
  };
}

function describeSpec(m: Pick<FeaturesManifest, 'encoder' | 'layer' | 'dtype' | 'weights' | 'preprocessing'>): string {
  return `${m.encoder.name} ${m.layer}, weights ${m.weights === 'random' ? 'random' : path.basename(m.weights)}, ${m.dtype}, ${m.preprocessing.interpolation} resize`;
}

// ---------------------------------------------------------------------------------------------------
// Reader

export interface FeatureCache {
  dir: string;
  /** The merged view of manifest.json and every writer's fragment. */
  manifest: FeaturesManifest;
  /** Values per image (product of manifest.shape). */
  dim: number;
  /** Bytes of one stored row (dim x 2 for float16, dim x 4 for float32). */
  rowBytes: number;
  has(key: string): boolean;
  /** The cached vector of `key` as float32, a new array read from its shard (DataError when absent). */
  get(key: string): Float32Array;
  /** The stored bytes of `key`'s row (manifest.dtype, little-endian), read into `into` when given. */
  readRaw(key: string, into?: Uint8Array): Uint8Array;
  /** Cached image keys, sorted. */
  keys(): string[];
  /** `keys` reordered by where their rows lie (shard, then row), for sequential reads. Unknown keys last. */
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
  if (!snap) throw new DataError(`${dir}: no feature cache here (${MANIFEST} missing); run \`captioner features\` first`);
  const manifest = merge(snap);
  const where = path.join(dir, MANIFEST);
  if (expect.fingerprint && expect.fingerprint !== manifest.fingerprint) {
    throw new DataError(`${where}: these features were computed with different settings (${describeSpec(manifest)}; fingerprint ${manifest.fingerprint.slice(0, 19)}…, expected ${expect.fingerprint.slice(0, 19)}…); recompute with \`captioner features\` into a fresh --out`);
  }
  if (expect.layer && expect.layer !== manifest.layer) throw new DataError(`${where}: features are from layer ${manifest.layer}, expected ${expect.layer}`);
  if (expect.shape && expect.shape.join('x') !== manifest.shape.join('x')) throw new DataError(`${where}: features have shape [${manifest.shape}], expected [${expect.shape}]`);
  const rowBytes = rowLength(manifest.shape) * bytesPer(manifest.dtype);
  // a damaged shard is tolerated only when every key it holds is also in an intact one (a rerun of
  // `features` recomputes the keys of damaged shards, so it repairs the cache)
  let damage: string | null = null;
  const intact: ShardEntry[] = [];
  for (const sh of manifest.shards) {
    const file = path.join(dir, sh.file);
    const size = await fs.stat(file).then((st) => st.size, () => -1);
    if (size >= 0 && size === sh.rows * rowBytes && sh.keys.length === sh.rows) intact.push(sh);
    else damage ??= (size < 0 ? `${where}: shard ${sh.file} is missing` : `${file}: ${size} bytes, expected ${sh.rows} rows of ${rowBytes} bytes`);
  }
  if (damage) {
    const have = new Set(intact.flatMap((sh) => sh.keys));
    if (manifest.shards.some((sh) => !intact.includes(sh) && sh.keys.some((k) => !have.has(k)))) {
      throw new DataError(`${damage}; the cache is damaged, run \`captioner features\` again to recompute the lost images`);
    }
  }
  manifest.shards = intact;
  return openIndexed(dir, manifest, rowBytes);
}

function openIndexed(dir: string, manifest: FeaturesManifest, rowBytes: number): FeatureCache {
  const dim = rowLength(manifest.shape);
  const index = new Map<string, { shard: number; row: number }>();
  manifest.shards.forEach((sh, s) => {
    sh.keys.forEach((k, row) => {
      if (!index.has(k)) index.set(k, { shard: s, row });
    });
  });
  const fds = new Map<number, number>();
  const fdOf = (s: number) => {
    let fd = fds.get(s);
    if (fd === undefined) {
      fd = openSync(path.join(dir, manifest.shards[s].file), 'r');
      fds.set(s, fd);
    }
    return fd;
  };
  const readRaw = (key: string, into?: Uint8Array): Uint8Array => {
    const at = index.get(key);
    if (!at) throw new DataError(`${dir}: no cached features for image "${key}"${manifest.failed.some((f) => f.image === key) ? ' (it failed to decode; see failed in the cache manifest)' : ''}`);
    const buf = into ? into.subarray(0, rowBytes) : new Uint8Array(rowBytes);
    if (buf.length !== rowBytes) throw new Error(`readRaw: buffer of ${into!.length} bytes for a row of ${rowBytes}`);
    const fd = fdOf(at.shard);
    for (let done = 0; done < rowBytes; ) {
      const got = readSync(fd, buf, done, rowBytes - done, at.row * rowBytes + done);
      if (got <= 0) throw new DataError(`${path.join(dir, manifest.shards[at.shard].file)}: short read at row ${at.row}; the shard was changed after the cache was opened, run \`captioner features\` again`);
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
      const at = (k: string) => index.get(k) ?? { shard: Infinity, row: 0 };
      return [...keys].sort((a, b) => {
        const x = at(a);
        const y = at(b);
        return x.shard - y.shard || x.row - y.row || (x.shard === Infinity ? byName(a, b) : 0);
      });
    },
    close() {
      for (const fd of fds.values()) closeSync(fd);
      fds.clear();
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Bounded reading for training: memory held for vectors never exceeds a byte budget

export interface ReaderStats {
  /** 'decoded': every needed vector fits the budget as float32 and is kept decoded once read (fc2 fast
   *  path); 'stored': vectors are kept as stored (float16 halves them), least recently used dropped
   *  first, and decoded to a new float32 array on each get. */
  mode: 'decoded' | 'stored';
  budgetBytes: number;
  /** Bytes of vectors held now / at most so far (the reader's own accounting). */
  residentBytes: number;
  peakResidentBytes: number;
  /** Vectors held now. */
  residentRows: number;
  hits: number;
  /** Rows read from the shards (first reads and re-reads after eviction). */
  reads: number;
}

/** A feature source (structurally train/data.ts's FeatureSource) over a cache, with bounded memory. */
export interface BoundedFeatureSource {
  dim: number;
  /** Per-image shape from the manifest, e.g. [4096] or [14, 14, 512] (positions x channels, channels last). */
  shape: number[];
  has(key: string): boolean;
  /** float32 values of `key`; do not modify the array (in 'decoded' mode it is the one kept). */
  get(key: string): Float32Array;
  /** As FeatureCache.byLocation (channelStats reads in this order). */
  byLocation(keys: Iterable<string>): string[];
  stats(): ReaderStats;
}

export interface BoundedReaderOptions {
  /** Most bytes of vectors held at once (0: hold none, read each get from the shards). */
  budgetBytes: number;
  /** How many distinct images will be asked for (default: all the cache holds); picks the mode. */
  rows?: number;
}

/**
 * Wrap `cache` for training: vectors are kept in memory up to `budgetBytes` (see ReaderStats.mode) and
 * read again from the shards (positioned reads) when they were dropped. Memory for vectors is bounded
 * by the budget, whatever the dataset size; besides it, only the key index (a few dozen bytes per image)
 * and the arrays handed out by get (one per call, owned by the caller) exist.
 */
export function boundedFeatureSource(cache: FeatureCache, opts: BoundedReaderOptions): BoundedFeatureSource {
  const budget = Math.max(0, opts.budgetBytes);
  const rows = opts.rows ?? cache.manifest.count;
  const decodedBytes = cache.dim * 4;
  const mode: ReaderStats['mode'] = rows * decodedBytes <= budget ? 'decoded' : 'stored';
  const unit = mode === 'decoded' ? decodedBytes : cache.rowBytes;
  const dtype = cache.manifest.dtype;
  // insertion order of a Map is its recency order: a hit moves the key to the end, eviction takes the first
  const held = new Map<string, Float32Array | Uint8Array>();
  let resident = 0;
  let peak = 0;
  let hits = 0;
  let reads = 0;
  const keep = (key: string, v: Float32Array | Uint8Array) => {
    if (unit > budget) return; // one row is over the budget: hold nothing
    while (resident + unit > budget) {
      const oldest = held.keys().next().value as string;
      held.delete(oldest);
      resident -= unit;
    }
    held.set(key, v);
    resident += unit;
    if (resident > peak) peak = resident;
  };
  return {
    dim: cache.dim,
    shape: [...cache.manifest.shape],
    has: (key) => cache.has(key),
    get(key) {
      const v = held.get(key);
      if (v) {
        hits++;
        held.delete(key);
        held.set(key, v);
        return mode === 'decoded' ? (v as Float32Array) : decodeRow(v as Uint8Array, dtype);
      }
      reads++;
      const raw = cache.readRaw(key);
      if (mode === 'decoded') {
        const f = decodeRow(raw, dtype);
        keep(key, f);
        return f;
      }
      keep(key, raw);
      return decodeRow(raw, dtype);
    },
    byLocation: (keys) => cache.byLocation(keys),
    stats: () => ({ mode, budgetBytes: budget, residentBytes: resident, peakResidentBytes: peak, residentRows: held.size, hits, reads }),
  };
}

export interface ChannelStats {
  /** Per-channel mean and (population) standard deviation over every image and position. */
  mean: Float32Array;
  std: Float32Array;
  /** Images read, and positions per image (product of the shape but its last axis; 1 for fc2). */
  images: number;
  positions: number;
}

/**
 * Per-channel mean and std of the vectors of `keys` (duplicates counted once), streaming: one image at a
 * time, so memory is a few arrays of `channels` doubles whatever the split size. A vector is laid out
 * positions-major (NHWC flattened: [positions, channels]); `channels` is the shape's last axis (for fc2
 * [4096], each unit is a channel). Per-image moments are merged with Chan's formula in float64, so a
 * large mean does not cancel the variance. With a FeatureCache (or a source with byLocation) the rows
 * are read in shard order.
 */
export function channelStats(
  source: { dim: number; get(key: string): Float32Array; byLocation?(keys: Iterable<string>): string[] },
  keys: Iterable<string>,
  shape: readonly number[],
): ChannelStats {
  const channels = shape[shape.length - 1] ?? 1;
  const positions = rowLength(shape) / channels;
  if (!Number.isInteger(positions) || channels * positions !== source.dim) throw new DataError(`feature statistics: shape [${shape}] does not match vectors of ${source.dim} values`);
  const unique = [...new Set(keys)];
  const order = source.byLocation ? source.byLocation(unique) : unique;
  const mean = new Float64Array(channels);
  const m2 = new Float64Array(channels);
  const imMean = new Float64Array(channels);
  const imM2 = new Float64Array(channels);
  let n = 0; // values per channel so far
  for (const key of order) {
    const v = source.get(key);
    if (v.length !== source.dim) throw new DataError(`feature statistics: vector of ${key} has ${v.length} values, expected ${source.dim}`);
    // this image's per-channel mean and sum of squared deviations (two passes over one vector)
    imMean.fill(0);
    imM2.fill(0);
    for (let p = 0, i = 0; p < positions; p++) for (let c = 0; c < channels; c++, i++) imMean[c] += v[i];
    for (let c = 0; c < channels; c++) imMean[c] /= positions;
    for (let p = 0, i = 0; p < positions; p++)
      for (let c = 0; c < channels; c++, i++) {
        const d = v[i] - imMean[c];
        imM2[c] += d * d;
      }
    // merge (Chan et al.): n values so far with `positions` new ones
    const total = n + positions;
    for (let c = 0; c < channels; c++) {
      const delta = imMean[c] - mean[c];
      mean[c] += (delta * positions) / total;
      m2[c] += imM2[c] + (delta * delta * n * positions) / total;
    }
    n = total;
  }
  const std = new Float32Array(channels);
  for (let c = 0; c < channels; c++) std[c] = n ? Math.sqrt(Math.max(0, m2[c] / n)) : 0;
  return { mean: Float32Array.from(mean), std, images: unique.length, positions };
}

// ---------------------------------------------------------------------------------------------------
// Writer

export interface CacheWriter {
  readonly dir: string;
  readonly fingerprint: string;
  /** This writer's id (names its fragment part-<id>.json and its shards shard-<id>-<n>.bin). */
  readonly id: string;
  /** Whether `key` is cached (by any writer, as of opening, or by this one). */
  has(key: string): boolean;
  /** Buffer one vector (encoded in the cache's dtype at once); writes a shard when it is full (shardBytes / shardSize). */
  add(key: string, vector: Float32Array): Promise<void>;
  /** Record an image that could not be encoded (written with the next flush). */
  fail(entry: FailedImage): void;
  /** Write pending rows as a shard (if any) and pending failures into this writer's fragment. */
  flush(): Promise<void>;
  /** Rows waiting to be flushed. */
  pending(): number;
  /** Flush, mark the fragment finished, and return the merged manifest of the whole cache. */
  close(): Promise<FeaturesManifest>;
}

export interface WriterOptions {
  /** Bytes per shard file, at most (default DEFAULT_SHARD_BYTES); a row larger than this gets a shard of its own. */
  shardBytes?: number;
  /** Rows per shard file, at most (default: no limit but shardBytes). */
  shardSize?: number;
}

export const DEFAULT_SHARD_BYTES = 64 * 1024 ** 2;

function identity(): WriterIdentity {
  const host = os.hostname().replace(/[^A-Za-z0-9]/g, '_').slice(0, 48) || 'host';
  const read = (f: () => string) => {
    try {
      return f().trim() || undefined;
    } catch {
      return undefined;
    }
  };
  return {
    id: `${host}_${process.pid}_${randomBytes(4).toString('hex')}`,
    host,
    pid: process.pid,
    boot: read(() => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8')),
    pidns: read(() => readlinkSync('/proc/self/ns/pid')),
  };
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

/** Whether the writer of a fragment has provably finished (so files it did not reference are garbage). */
function writerGone(p: ManifestPart, mtimeMs: number, me: WriterIdentity, now: number): boolean {
  if (p.closed) return true;
  const w = p.writer;
  // a pid only means something in our own PID namespace on this boot of this host
  if (me.boot && me.pidns && w.boot === me.boot && w.pidns === me.pidns && w.host === me.host && !alive(w.pid)) return true;
  return now - mtimeMs > STALE_MS;
}

const mtimeOf = (file: string) => fs.stat(file).then((s) => s.mtimeMs, () => null);

/** Delete what no fragment names and whose writer provably finished; never a running writer's files. */
async function removeGarbage(dir: string, snap: Snapshot, me: WriterIdentity): Promise<void> {
  const now = Date.now();
  const referenced = new Set([...snap.base.shards, ...[...snap.parts.values()].flatMap((p) => p.shards)].map((s) => s.file));
  const owners = new Map<string, { name: string; part: ManifestPart }>();
  for (const [name, part] of snap.parts) owners.set(PART_RE.exec(name)![1], { name, part });
  // verdict per writer, from its fragment as it is now (it may have changed since `snap` was read)
  const verdicts = new Map<string, { gone: boolean; refs: Set<string>; empty: boolean }>();
  const gone = async (owner: string, name: string): Promise<boolean> => {
    const o = owners.get(owner);
    if (!o) {
      const t = await mtimeOf(path.join(dir, name)); // no fragment (yet): judge by the file's own age
      return t !== null && now - t > STALE_MS;
    }
    if (!verdicts.has(owner)) {
      const file = path.join(dir, o.name);
      const t = await mtimeOf(file);
      const part = await readPart(file, snap.base.fingerprint).catch(() => null);
      const empty = part !== null && !part.shards.length && !part.failed.length;
      verdicts.set(owner, { gone: t !== null && part !== null && writerGone(part, t, me, now), refs: new Set(part?.shards.map((s) => s.file)), empty });
    }
    const v = verdicts.get(owner)!;
    return v.gone && !v.refs.has(name);
  };
  // fragments last, so that the verdict on their writer is reached while they still exist
  const names = (await fs.readdir(dir)).sort((a, b) => Number(PART_RE.test(a)) - Number(PART_RE.test(b)));
  for (const name of names) {
    const m = OWNED_RE.exec(name);
    let remove = false;
    if (m) {
      const owner = m[2] ?? m[3] ?? m[4];
      const tmp = m[5] !== undefined || m[1] === '.';
      if (owner === me.id) continue;
      if (m[3] && !tmp) {
        // a fragment is data: only an empty one of a finished writer goes
        remove = snap.parts.has(name) && (await gone(owner, name)) && verdicts.get(owner)!.empty;
      } else if (m[2] && !tmp && referenced.has(name)) remove = false;
      else remove = await gone(owner, name);
    } else if ((V1_SHARD_RE.test(name) && !referenced.has(name)) || V1_TMP_RE.test(name) || name === V1_LOCK) {
      const t = await mtimeOf(path.join(dir, name)); // left by a version 1 writer
      remove = t !== null && now - t > STALE_MS;
    }
    if (remove) await fs.rm(path.join(dir, name), { force: true });
  }
}

/** Rewrite a version 1 manifest as version 2 (same shards), excluding version 1 writers by their lock. */
async function upgradeV1(dir: string): Promise<void> {
  const lock = path.join(dir, V1_LOCK);
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      await (await fs.open(lock, 'wx')).close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new DataError(`${lock}: cannot create the cache lock (${(e as NodeJS.ErrnoException).code})`);
      const t = await mtimeOf(lock);
      if (t !== null && Date.now() - t > STALE_MS) await fs.rm(lock, { force: true });
      else if (Date.now() > deadline) throw new DataError(`${lock}: an older captioner is writing this version 1 feature cache; wait for it to finish, or delete the lock file if none is running`);
      else await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
    }
  }
  try {
    const m = await readBase(dir);
    if (m && m.version === 1) await writeJsonAtomic(path.join(dir, MANIFEST), { ...m, version: FEATURES_VERSION });
  } finally {
    await fs.rm(lock, { force: true });
  }
}

/**
 * Open (creating if needed) a cache folder for appending. An existing cache must have the same
 * fingerprint (DataError otherwise: delete it or choose another folder).
 */
export async function openCacheWriter(dir: string, spec: CacheSpec, opts: WriterOptions): Promise<CacheWriter> {
  await checkStageFolder(dir, { kind: FEATURES_KIND, option: '--out or features.out' });
  await ensureDir(dir);
  const fingerprint = cacheFingerprint(spec);
  const dim = rowLength(spec.encoder.shape);
  const rowBytes = dim * bytesPer(spec.dtype);
  // rows per shard: as many as fit shardBytes (at least one), capped by shardSize
  const shardRows = Math.max(1, Math.min(Math.floor((opts.shardBytes ?? DEFAULT_SHARD_BYTES) / rowBytes), opts.shardSize ?? Infinity));
  const me = identity();
  const partName = `part-${me.id}.json`;
  const partFile = path.join(dir, partName);
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

  /** Remove this writer's temp files and the shards its fragment does not name (after a failed write). */
  let committed: ShardEntry[] = [];
  const removeOwnLitter = async () => {
    const keep = new Set(committed.map((s) => s.file));
    for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
      const m = OWNED_RE.exec(name);
      if (m && (m[2] ?? m[3] ?? m[4]) === me.id && (m[5] !== undefined || m[1] === '.' || (m[2] && !keep.has(name)) || m[4])) await fs.rm(path.join(dir, name), { force: true }).catch(() => {});
    }
  };
  const writing = async <T>(file: string, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (e) {
      // writeFileAtomic throws a WriteError with the reason; other writes throw the system error
      const reason = e instanceof WriteError ? e.reason : ioReason(e);
      await removeOwnLitter();
      throw new DataError(`${file}: cannot write the feature cache: ${reason}`);
    }
  };

  // the base manifest: created once, by whichever writer comes first
  let snap = await readSnapshot(dir);
  if (!snap) {
    const head = path.join(dir, `head-${me.id}.json`);
    await writing(path.join(dir, MANIFEST), async () => {
      try {
        await writeJsonAtomic(head, fresh());
        try {
          await fs.link(head, path.join(dir, MANIFEST)); // atomic create-if-absent
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'EEXIST') return; // another writer was first
          if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw e;
          // no hard links here: the same settings give the same header, so replacing one is harmless
          await fs.rename(head, path.join(dir, MANIFEST));
        }
      } finally {
        await fs.rm(head, { force: true });
      }
    });
    snap = (await readSnapshot(dir))!;
  }
  if (snap.base.fingerprint !== fingerprint) {
    throw new DataError(
      `${path.join(dir, MANIFEST)}: this folder holds features computed with different settings (${describeSpec(snap.base)}) than now (${describeSpec(fresh())}); ` +
        'delete the folder or choose another --out',
    );
  }
  if (snap.base.version === 1) {
    await upgradeV1(dir);
    snap = (await readSnapshot(dir))!;
  }
  await removeGarbage(dir, snap, me);
  // what is cached: keys of intact shards (a damaged shard's keys are computed again)
  const cached = new Set<string>();
  const merged = merge(snap);
  for (const sh of merged.shards) {
    const size = await fs.stat(path.join(dir, sh.file)).then((s) => s.size, () => -1);
    if (size === sh.rows * rowBytes && sh.keys.length === sh.rows) for (const k of sh.keys) cached.add(k);
  }
  // our timestamps are later than everything we have seen, so "the latest failure wins" holds even
  // when clocks of two hosts disagree a little
  let clock = Math.max(Date.now(), Date.parse(merged.updated) + 1 || 0);
  const tick = () => (clock = Math.max(clock + 1, Date.now()));

  // pending rows, already encoded: the writer holds at most one shard (shardRows * rowBytes bytes)
  let buf = new Uint8Array(0);
  let keys: string[] = [];
  let pendingKeys = new Set<string>();
  const shards: ShardEntry[] = [];
  const failures = new Map<string, FailedImage>();
  const mine = new Set<string>();
  let dirty = false;
  let seq = 0;
  let started: string | null = null;
  let lastBeat = Date.now();
  let closed = false;
  let queue: Promise<unknown> = Promise.resolve();

  /** Rewrite our fragment (serialized: flushes and heartbeats never interleave). */
  const commit = (finished: boolean, heartbeat = false): Promise<void> => {
    const job = queue.then(async () => {
      if (Date.now() - lastBeat > STALE_MS / 2) {
        // we were stopped long enough for others to think us gone: keep only shards still on disk
        for (let i = shards.length - 1; i >= 0; i--) if ((await mtimeOf(path.join(dir, shards[i].file))) === null) shards.splice(i, 1);
      }
      const updated = new Date(tick()).toISOString();
      started ??= updated;
      const part: ManifestPart = {
        kind: PART_KIND,
        version: FEATURES_VERSION,
        fingerprint,
        writer: me,
        closed: finished,
        shards: [...shards],
        failed: [...failures.values()].filter((f) => !mine.has(f.image)).sort((a, b) => byName(a.image, b.image)),
        started,
        updated,
      };
      // a failed heartbeat only leaves the previous fragment in place; the next flush reports the disk
      if (heartbeat) await writeJsonAtomic(partFile, part);
      else await writing(partFile, () => writeJsonAtomic(partFile, part));
      committed = part.shards;
      lastBeat = Date.now();
    });
    queue = job.catch(() => {});
    return job;
  };
  const heartbeat = setInterval(() => {
    if (started && !closed) commit(false, true).catch(() => {});
  }, HEARTBEAT_MS);
  heartbeat.unref();

  const flush = async (): Promise<void> => {
    if (!keys.length && !dirty) return;
    if (keys.length) {
      if (!started) await commit(false); // claim our files before the first shard exists
      const file = `shard-${me.id}-${seq++}.bin`;
      const bytes = buf.subarray(0, keys.length * rowBytes);
      await writing(path.join(dir, file), () => writeFileAtomic(path.join(dir, file), bytes));
      shards.push({ file, rows: keys.length, keys });
      for (const k of keys) mine.add(k);
      keys = [];
      pendingKeys = new Set();
    }
    dirty = false;
    await commit(false);
  };

  const id = me.id;
  return {
    dir,
    fingerprint,
    id,
    has: (key) => cached.has(key) || mine.has(key) || pendingKeys.has(key),
    async add(key, vector) {
      if (closed) throw new Error('cache writer used after close()');
      if (vector.length !== dim) throw new DataError(`feature cache: vector for ${key} has ${vector.length} values, expected ${dim}`);
      for (let i = 0; i < vector.length; i++) if (!Number.isFinite(vector[i])) throw new DataError(`feature cache: vector for ${key} has a non-finite value at ${i}; refusing to cache it`);
      if (cached.has(key) || mine.has(key) || pendingKeys.has(key)) return; // already cached: never store a key twice
      const at = keys.length * rowBytes;
      if (at + rowBytes > buf.length) {
        // grow by doubling up to one full shard (small runs never allocate a whole shard)
        const grown = new Uint8Array(Math.min(shardRows, Math.max(2 * keys.length, 1)) * rowBytes);
        grown.set(buf.subarray(0, at));
        buf = grown;
      }
      encodeRowInto(vector, spec.dtype, buf, at);
      keys.push(key);
      pendingKeys.add(key);
      if (failures.delete(key)) dirty = true;
      if (keys.length >= shardRows) await flush();
    },
    fail(entry) {
      failures.set(entry.image, entry);
      dirty = true;
    },
    flush,
    pending: () => keys.length,
    async close() {
      try {
        await flush();
        if (started && !closed) await commit(true);
      } finally {
        closed = true;
        clearInterval(heartbeat);
      }
      return merge((await readSnapshot(dir))!);
    },
  };
}

/** Size check helper for tests and tools: bytes a shard of `rows` rows takes. */
export function shardBytes(rows: number, shape: readonly number[], dtype: FeatureDtype): number {
  return rows * rowLength(shape) * bytesPer(dtype);
}
