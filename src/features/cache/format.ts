// The feature cache's on-disk format: a folder of immutable binary shards, a base manifest and one
// manifest fragment per writer. Nothing a writer wrote is ever rewritten by another writer, so no lock is needed and writers may
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
//
// This file: kinds, versions, file names, manifest and fragment types, the configuration fingerprint.
// Part of src/features/cache/, the one module that writes, reads and versions the feature cache (entry:
// src/features/cache.ts).
import { createHash } from 'node:crypto';
import type { ImageErrorKind } from '../image.js';
import type { EncoderInfo, Preprocessing } from '../types.js';

export const FEATURES_KIND = 'captioner.features';
export const FEATURES_VERSION = 2;
export const MANIFEST = 'manifest.json';
export const PART_KIND = 'captioner.features.part';
/** Lock file of version 1 writers: taken only to upgrade a version 1 manifest in place. */
export const V1_LOCK = 'manifest.lock';
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
/** Files a writer owns, including the temp files of their atomic writes (`<name>.<...>.tmp`, or a dotted `.<name>...tmp...`). */
export const OWNED_RE =
  /^(\.?)(?:shard-([A-Za-z0-9_]+)-\d+\.bin|part-([A-Za-z0-9_]+)\.json|head-([A-Za-z0-9_]+)\.json)([.~-].*tmp.*)?$/;
export const V1_SHARD_RE = /^shard-\d+-[a-z0-9]+-\d+\.bin$/;
export const V1_TMP_RE = /^manifest\.json\..*\.tmp$/;
