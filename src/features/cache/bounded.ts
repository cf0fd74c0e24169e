// Reading the feature cache for training: a reader whose memory for vectors never exceeds a byte budget,
// and streaming per-channel statistics.
// Part of src/features/cache/, the one module that writes, reads and versions the feature cache (entry:
// src/features/cache.ts).
import { DataError } from '../../errors.js';
import { decodeRow } from './codec.js';
import { rowLength } from './format.js';
import type { FeatureCache } from './reader.js';

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
  /** Rows read from the chunk files (first reads and re-reads after eviction). */
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
  /** Most bytes of vectors held at once (0: hold none, read each get from the chunk files). */
  budgetBytes: number;
  /** How many distinct images will be asked for (default: all the cache holds); picks the mode. */
  rows?: number;
}

/**
 * Wrap `cache` for training: vectors are kept in memory up to `budgetBytes` (see ReaderStats.mode) and
 * read again from the chunk files (positioned reads) when they were dropped. Memory for vectors is bounded
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
    stats: () => ({
      mode,
      budgetBytes: budget,
      residentBytes: resident,
      peakResidentBytes: peak,
      residentRows: held.size,
      hits,
      reads,
    }),
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
 * are read in chunk order.
 */
export function channelStats(
  source: { dim: number; get(key: string): Float32Array; byLocation?(keys: Iterable<string>): string[] },
  keys: Iterable<string>,
  shape: readonly number[],
): ChannelStats {
  const channels = shape[shape.length - 1] ?? 1;
  const positions = rowLength(shape) / channels;
  if (!Number.isInteger(positions) || channels * positions !== source.dim)
    throw new DataError(`feature statistics: shape [${shape}] does not match vectors of ${source.dim} values`);
  const unique = [...new Set(keys)];
  const order = source.byLocation ? source.byLocation(unique) : unique;
  const mean = new Float64Array(channels);
  const m2 = new Float64Array(channels);
  const imMean = new Float64Array(channels);
  const imM2 = new Float64Array(channels);
  let n = 0; // values per channel so far
  for (const key of order) {
    const v = source.get(key);
    if (v.length !== source.dim)
      throw new DataError(`feature statistics: vector of ${key} has ${v.length} values, expected ${source.dim}`);
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
