// The feature cache's on-disk format: a folder of immutable binary chunk files, a base manifest and one
// manifest fragment per writer. Nothing a writer wrote is ever rewritten by another writer, so no lock is needed and writers may
// run on different hosts or in different PID namespaces (Slurm nodes, Kubernetes pods) on a shared folder.
//
//   <dir>/manifest.json            kind 'captioner.features', version 3: what computed the vectors (encoder
//                                  info, weights fingerprint, preprocessing, layer), dtype, per-image shape and a
//                                  `fingerprint` of all that. Created once (atomic create-if-absent) by the
//                                  first writer, never rewritten but to upgrade an older version in place
//                                  (a version 1 cache keeps its chunks here).
//   <dir>/part-<writer>.json       one writer's fragment: its chunks (file, rows, keys in row order) and its
//                                  failed images. Rewritten atomically (temp + fsync + rename) only by its own
//                                  writer, after each chunk and as a heartbeat; `closed` once the writer finished.
//   <dir>/chunk-<writer>-<n>.bin   rows of little-endian float32 or float16, row-major, no header.
//
// <writer> is hostname_pid_random, unique across hosts and PID namespaces. Readers merge the base and
// all fragments (sorted by name): the first chunk holding a key wins, so overlapping writers (two
// processes on the same --shard) only cost disk, and the result is deterministic. A writer writes its
// chunk, then its fragment, so a crash (even kill -9) leaves fragments that only name complete chunks.
// Clean-up (when a writer opens) deletes only files no fragment names whose writer provably finished:
// its fragment says closed, or it ran on this host in this PID namespace and its pid is gone, or its
// heartbeat is older than STALE_MS (other hosts / namespaces).
//
// Older versions, still read (never rewritten but the base manifest's upgrade): versions 1 and 2 called the
// data files shards (`shard-<writer>-<n>.bin`, version 1 `shard-<pid>-<random>-<n>.bin`) and listed them under
// `shards` in the manifest and fragments. Version 3 only renamed them (one word per meaning: "shard" is the
// --shard work split); the bytes are the same. Readers take either list (manifest.ts), clean-up owns either
// file name (OWNED_RE), and a writer opening an older cache upgrades its base manifest to version 3
// (cleanup.ts), as version 2 writers upgraded version 1: an older captioner then refuses the folder with
// "version 3 is not supported" rather than calling the new fragments malformed (an older writer still
// running at that moment fails at its close, its rows already committed). Files are never renamed on disk:
// another process may be reading them, and an older writer still names them in its fragment.
//
// This file: kinds, versions, file names, manifest and fragment types, the configuration fingerprint.
// Part of src/features/cache/, the one module that writes, reads and versions the feature cache (entry:
// src/features/cache.ts).
import { createHash } from 'node:crypto';
import type { ImageErrorKind } from '../image.js';
import type { EncoderInfo, Preprocessing } from '../types.js';

export const FEATURES_KIND = 'captioner.features';
export const FEATURES_VERSION = 3;
export const MANIFEST = 'manifest.json';
export const PART_KIND = 'captioner.features.part';
/** Lock file of version 1 writers (who rewrote manifest.json under it); later writers take it only to
 *  upgrade an older base manifest in place, so two upgrades, or an upgrade and a version 1 writer, never interleave. */
export const UPGRADE_LOCK = 'manifest.lock';
/** A writer rewrites its fragment at least this often while open. */
export const HEARTBEAT_MS = 30_000;
/** A writer whose fragment (or, before it has one, whose files) did not change for this long is gone. */
export const STALE_MS = 10 * 60_000;

export type FeatureDtype = 'float32' | 'float16';

/** One data file (chunk-<writer>-<n>.bin, or shard-... in caches of versions 1 and 2). */
export interface ChunkEntry {
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
  chunks: ChunkEntry[];
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
  chunks: ChunkEntry[];
  failed: FailedImage[];
  started: string;
  updated: string;
}

/** What a cache holds, independent of where or when it was computed. */
export interface CacheSpec {
  encoder: Pick<
    EncoderInfo,
    | 'name'
    | 'fingerprint'
    | 'runtime'
    | 'detail'
    | 'weights'
    | 'weightsFingerprint'
    | 'layer'
    | 'preprocessing'
    | 'shape'
  >;
  dtype: FeatureDtype;
}

/** Fingerprint of a cache's configuration: encoder fingerprint (weights + layer) + preprocessing + dtype. */
export function cacheFingerprint(spec: CacheSpec): string {
  const e = spec.encoder;
  const canonical = JSON.stringify({
    encoder: e.fingerprint,
    layer: e.layer,
    shape: e.shape,
    preprocessing: sortKeys(e.preprocessing),
    dtype: spec.dtype,
  });
  return `sha256:${createHash('sha256').update(canonical).digest('hex')}`;
}

function sortKeys(o: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

export const bytesPer = (dtype: FeatureDtype) => (dtype === 'float16' ? 2 : 4);
export const rowLength = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

export const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
export const PART_RE = /^part-([A-Za-z0-9_]+)\.json$/;
/**
 * Files a writer owns, including the temp files of their atomic writes (`<name>.<...>.tmp`, or a dotted `.<name>...tmp...`).
 * Groups: 1 the leading dot, 2 a data file's writer, 3 a fragment's, 4 a head's, 5 a temp suffix. Data files are
 * `chunk-` (version 3) or `shard-` (version 2, written by older captioners that may still run beside this one):
 * both are owned, so clean-up judges an older writer's files like any other writer's and never orphans them.
 */
export const OWNED_RE =
  /^(\.?)(?:(?:chunk|shard)-([A-Za-z0-9_]+)-\d+\.bin|part-([A-Za-z0-9_]+)\.json|head-([A-Za-z0-9_]+)\.json)([.~-].*tmp.*)?$/;
/** Data files of version 1 writers (who only ever called them shards). */
export const V1_CHUNK_RE = /^shard-\d+-[a-z0-9]+-\d+\.bin$/;
export const V1_TMP_RE = /^manifest\.json\..*\.tmp$/;
