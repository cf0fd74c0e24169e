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
import { DataError } from '../errors.js';
import { ensureDir, readJson, writeFileAtomic, writeJsonAtomic } from '../util/fsx.js';
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
  return {
    dir,
    manifest,
    dim,
    has: (key) => index.has(key),
    get(key) {
      const at = index.get(key);
      if (!at) throw new DataError(`${dir}: no cached features for image "${key}"${manifest.failed.some((f) => f.image === key) ? ' (it failed to decode; see failed in the cache manifest)' : ''}`);
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
  /** This writer's id (names its fragment part-<id>.json and its shards shard-<id>-<n>.bin). */
  readonly id: string;
  /** Whether `key` is cached (by any writer, as of opening, or by this one). */
  has(key: string): boolean;
  /** Buffer one vector; writes a shard when `shardSize` rows are pending. */
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
  /** Rows per shard file. */
  shardSize: number;
}

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

const ERRNO_TEXT: Record<string, string> = {
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EIO: 'input/output error',
  EROFS: 'read-only file system',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
};

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
      if (e instanceof DataError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      await removeOwnLitter();
      throw new DataError(`${file}: cannot write the feature cache: ${code ? `${ERRNO_TEXT[code] ?? 'error'} (${code})` : (e as Error).message}`);
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

  let rows: Float32Array[] = [];
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
    if (!rows.length && !dirty) return;
    if (rows.length) {
      if (!started) await commit(false); // claim our files before the first shard exists
      const file = `shard-${me.id}-${seq++}.bin`;
      const bytes = encodeRows(rows, spec.dtype);
      await writing(path.join(dir, file), () => writeFileAtomic(path.join(dir, file), bytes));
      shards.push({ file, rows: rows.length, keys });
      for (const k of keys) mine.add(k);
      rows = [];
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
      rows.push(vector);
      keys.push(key);
      pendingKeys.add(key);
      if (failures.delete(key)) dirty = true;
      if (rows.length >= opts.shardSize) await flush();
    },
    fail(entry) {
      failures.set(entry.image, entry);
      dirty = true;
    },
    flush,
    pending: () => rows.length,
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
