// The feature cache's writer: appends chunk files and rewrites only its own fragment (no lock; see format.ts).
// Part of src/features/cache/, the one module that writes, reads and versions the feature cache (entry:
// src/features/cache.ts).
import { readFileSync, readlinkSync, promises as fs } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as os from 'node:os';
import * as path from 'node:path';
import { DataError, WriteError } from '../../errors.js';
import { ensureDir, ioReason, writeFileAtomic, writeJsonAtomic } from '../../util/fsx.js';
import { checkStageFolder } from '../../util/stagedir.js';
import { encodeRowInto } from './codec.js';
import {
  byName,
  bytesPer,
  cacheFingerprint,
  FEATURES_KIND,
  FEATURES_VERSION,
  HEARTBEAT_MS,
  MANIFEST,
  OWNED_RE,
  PART_KIND,
  rowLength,
  STALE_MS,
} from './format.js';
import type { CacheSpec, ChunkEntry, FailedImage, FeaturesManifest, ManifestPart, WriterIdentity } from './format.js';
import { describeSpec, merge, readSnapshot } from './manifest.js';
import { mtimeOf, removeGarbage, upgradeBase } from './cleanup.js';

export interface CacheWriter {
  readonly dir: string;
  readonly fingerprint: string;
  /** This writer's id (names its fragment part-<id>.json and its chunks chunk-<id>-<n>.bin). */
  readonly id: string;
  /** Whether `key` is cached (by any writer, as of opening, or by this one). */
  has(key: string): boolean;
  /** Buffer one vector (encoded in the cache's dtype at once); writes a chunk when it is full (chunkBytes / chunkSize). */
  add(key: string, vector: Float32Array): Promise<void>;
  /** Record an image that could not be encoded (written with the next flush). */
  fail(entry: FailedImage): void;
  /** Write pending rows as a chunk (if any) and pending failures into this writer's fragment. */
  flush(): Promise<void>;
  /** Rows waiting to be flushed. */
  pending(): number;
  /** Flush, mark the fragment finished, and return the merged manifest of the whole cache. */
  close(): Promise<FeaturesManifest>;
}

export interface WriterOptions {
  /** Bytes per chunk file, at most (default DEFAULT_CHUNK_BYTES); a row larger than this gets a chunk of its own. */
  chunkBytes?: number;
  /** Rows per chunk file, at most (default: no limit but chunkBytes). */
  chunkSize?: number;
}

export const DEFAULT_CHUNK_BYTES = 64 * 1024 ** 2;

function identity(): WriterIdentity {
  const host =
    os
      .hostname()
      .replace(/[^A-Za-z0-9]/g, '_')
      .slice(0, 48) || 'host';
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

/**
 * Open (creating if needed) a cache folder for appending. An existing cache must have the same
 * fingerprint (DataError otherwise: delete it or choose another folder).
 */
/**
 * The checks of the cache folder that need no encoder: not another stage's artifact, and creatable (a
 * missing parent, a file in the way, /proc/nope). The features stage runs them before building the encoder.
 */
export async function prepareCacheFolder(dir: string): Promise<void> {
  await checkStageFolder(dir, { kind: FEATURES_KIND, option: '--out or features.out' });
  await ensureDir(dir);
}

export async function openCacheWriter(dir: string, spec: CacheSpec, opts: WriterOptions): Promise<CacheWriter> {
  await prepareCacheFolder(dir);
  const fingerprint = cacheFingerprint(spec);
  const dim = rowLength(spec.encoder.shape);
  const rowBytes = dim * bytesPer(spec.dtype);
  // rows per chunk: as many as fit chunkBytes (at least one), capped by chunkSize
  const chunkRows = Math.max(
    1,
    Math.min(Math.floor((opts.chunkBytes ?? DEFAULT_CHUNK_BYTES) / rowBytes), opts.chunkSize ?? Infinity),
  );
  const me = identity();
  const partName = `part-${me.id}.json`;
  const partFile = path.join(dir, partName);
  const now = () => new Date().toISOString();
  const fresh = (): FeaturesManifest => ({
    kind: FEATURES_KIND,
    version: FEATURES_VERSION,
    fingerprint,
    encoder: {
      name: spec.encoder.name,
      fingerprint: spec.encoder.fingerprint,
      runtime: spec.encoder.runtime,
      detail: spec.encoder.detail,
    },
    weights: spec.encoder.weights,
    weightsFingerprint: spec.encoder.weightsFingerprint,
    layer: spec.encoder.layer,
    preprocessing: spec.encoder.preprocessing,
    dtype: spec.dtype,
    shape: [...spec.encoder.shape],
    count: 0,
    chunks: [],
    failed: [],
    created: now(),
    updated: now(),
  });

  /** Remove this writer's temp files and the chunks its fragment does not name (after a failed write). */
  let committed: ChunkEntry[] = [];
  const removeOwnLitter = async () => {
    const keep = new Set(committed.map((s) => s.file));
    for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
      const m = OWNED_RE.exec(name);
      if (
        m &&
        (m[2] ?? m[3] ?? m[4]) === me.id &&
        (m[5] !== undefined || m[1] === '.' || (m[2] && !keep.has(name)) || m[4])
      )
        await fs.rm(path.join(dir, name), { force: true }).catch(() => {});
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
  if (snap.base.version < FEATURES_VERSION) {
    await upgradeBase(dir);
    snap = (await readSnapshot(dir))!;
  }
  await removeGarbage(dir, snap, me);
  // what is cached: keys of intact chunks (a damaged chunk's keys are computed again)
  const cached = new Set<string>();
  const merged = merge(snap);
  for (const ch of merged.chunks) {
    const size = await fs.stat(path.join(dir, ch.file)).then(
      (s) => s.size,
      () => -1,
    );
    if (size === ch.rows * rowBytes && ch.keys.length === ch.rows) for (const k of ch.keys) cached.add(k);
  }
  // our timestamps are later than everything we have seen, so "the latest failure wins" holds even
  // when clocks of two hosts disagree a little
  let clock = Math.max(Date.now(), Date.parse(merged.updated) + 1 || 0);
  const tick = () => (clock = Math.max(clock + 1, Date.now()));

  // pending rows, already encoded: the writer holds at most one chunk (chunkRows * rowBytes bytes)
  let buf = new Uint8Array(0);
  let keys: string[] = [];
  let pendingKeys = new Set<string>();
  const chunks: ChunkEntry[] = [];
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
        // we were stopped long enough for others to think us gone: keep only chunks still on disk
        for (let i = chunks.length - 1; i >= 0; i--)
          if ((await mtimeOf(path.join(dir, chunks[i].file))) === null) chunks.splice(i, 1);
      }
      const updated = new Date(tick()).toISOString();
      started ??= updated;
      const part: ManifestPart = {
        kind: PART_KIND,
        version: FEATURES_VERSION,
        fingerprint,
        writer: me,
        closed: finished,
        chunks: [...chunks],
        failed: [...failures.values()].filter((f) => !mine.has(f.image)).sort((a, b) => byName(a.image, b.image)),
        started,
        updated,
      };
      // a failed heartbeat only leaves the previous fragment in place; the next flush reports the disk
      if (heartbeat) await writeJsonAtomic(partFile, part);
      else await writing(partFile, () => writeJsonAtomic(partFile, part));
      committed = part.chunks;
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
      if (!started) await commit(false); // claim our files before the first chunk exists
      const file = `chunk-${me.id}-${seq++}.bin`;
      const bytes = buf.subarray(0, keys.length * rowBytes);
      await writing(path.join(dir, file), () => writeFileAtomic(path.join(dir, file), bytes));
      chunks.push({ file, rows: keys.length, keys });
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
      if (vector.length !== dim)
        throw new DataError(`feature cache: vector for ${key} has ${vector.length} values, expected ${dim}`);
      for (let i = 0; i < vector.length; i++)
        if (!Number.isFinite(vector[i]))
          throw new DataError(`feature cache: vector for ${key} has a non-finite value at ${i}; refusing to cache it`);
      if (cached.has(key) || mine.has(key) || pendingKeys.has(key)) return; // already cached: never store a key twice
      const at = keys.length * rowBytes;
      if (at + rowBytes > buf.length) {
        // grow by doubling up to one full chunk (small runs never allocate a whole chunk)
        const grown = new Uint8Array(Math.min(chunkRows, Math.max(2 * keys.length, 1)) * rowBytes);
        grown.set(buf.subarray(0, at));
        buf = grown;
      }
      encodeRowInto(vector, spec.dtype, buf, at);
      keys.push(key);
      pendingKeys.add(key);
      if (failures.delete(key)) dirty = true;
      if (keys.length >= chunkRows) await flush();
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
