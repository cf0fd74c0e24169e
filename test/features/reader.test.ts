// Reading the feature cache at scale: chunks sized in bytes, the bounded reader training uses (the bytes
// it holds never exceed its budget, whatever the cache size), float16 decoding, and per-channel
// statistics of grid features ([positions, channels], channels last).
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigSchema } from '../../src/config/schema.js';
import { DataError } from '../../src/errors.js';
import {
  boundedFeatureSource,
  channelStats,
  decodeRow,
  DEFAULT_CHUNK_BYTES,
  fromHalf,
  openCacheWriter,
  openFeatureCache,
  type CacheSpec,
  type FeatureCache,
} from '../../src/features/cache.js';
import { batchesOf } from '../../src/train/data.js';
import { rng } from '../../src/util/random.js';

let work: string;
beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'cap-reader-'));
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

const spec = (shape: number[], dtype: CacheSpec['dtype']): CacheSpec => ({
  encoder: {
    name: 'vgg16',
    fingerprint: 'sha256:enc',
    runtime: 'onnx',
    detail: 'test',
    weights: 'random',
    weightsFingerprint: 'random:seed=1',
    layer: 'block5_conv3',
    shape,
    preprocessing: {
      size: 224,
      resize: 'fill',
      interpolation: 'nearest',
      alpha: 'white',
      mode: 'caffe',
      mean: [1, 2, 3],
      channelOrder: 'bgr',
      layout: 'nhwc',
    },
  },
  dtype,
});
const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
/** A ReLU-like grid: channel c has its own scale and offset, so per-channel statistics differ. */
const grid = (seed: number, shape: number[], offset = 0) => {
  const r = rng(seed);
  const channels = shape[shape.length - 1];
  return Float32Array.from({ length: size(shape) }, (_, i) => offset + Math.max(0, r() * 4 - 1) * (1 + (i % channels)));
};
const key = (i: number) => `img${String(i).padStart(3, '0')}.jpg`;

async function makeCache(
  name: string,
  shape: number[],
  dtype: CacheSpec['dtype'],
  n: number,
  opts: { chunkBytes?: number; chunkSize?: number } = {},
  offset = 0,
): Promise<string> {
  const dir = path.join(work, name);
  const w = await openCacheWriter(dir, spec(shape, dtype), opts);
  for (let i = 0; i < n; i++) await w.add(key(i), grid(i, shape, offset));
  await w.close();
  return dir;
}

describe('chunks sized in bytes', () => {
  it('a chunk holds as many rows as fit chunkBytes, chunkSize caps it, a row over the budget gets a chunk of its own', async () => {
    const shape = [2, 2, 4]; // 16 values: 32 bytes a row in float16
    const rowsOf = async (name: string, opts: { chunkBytes?: number; chunkSize?: number }) => {
      const dir = await makeCache(name, shape, 'float16', 7, opts);
      const c = await openFeatureCache(dir);
      try {
        for (const ch of c.manifest.chunks) expect((await fs.stat(path.join(dir, ch.file))).size).toBe(ch.rows * 32);
        for (let i = 0; i < 7; i++) expect(c.get(key(i))).toEqual(decodeRow(c.readRaw(key(i)), 'float16'));
        return c.manifest.chunks.map((s) => s.rows);
      } finally {
        c.close();
      }
    };
    expect(await rowsOf('b100', { chunkBytes: 100 })).toEqual([3, 3, 1]);
    expect(await rowsOf('b10', { chunkBytes: 10 })).toEqual([1, 1, 1, 1, 1, 1, 1]);
    expect(await rowsOf('b1000s2', { chunkBytes: 1000, chunkSize: 2 })).toEqual([2, 2, 2, 1]);
    expect(await rowsOf('default', {})).toEqual([7]);
  });

  it('config: chunkBytes 64 MiB by default, chunkSize optional, readCacheBytes 1 GiB', () => {
    const f = ConfigSchema.parse({}).features;
    expect(f.chunkBytes).toBe(64 * 1024 ** 2);
    expect(DEFAULT_CHUNK_BYTES).toBe(f.chunkBytes);
    expect(f.chunkSize).toBeUndefined();
    expect(f.readCacheBytes).toBe(1024 ** 3);
    expect(ConfigSchema.parse({ features: { chunkSize: 1024 } }).features.chunkSize).toBe(1024); // features.shardSize of earlier versions: test/config/load.test.ts
  });
});

describe('decodeRow', () => {
  it('gives fromHalf for all 65536 float16 patterns, aligned or not, and float32 exactly', () => {
    for (const offset of [0, 1]) {
      const bytes = new Uint8Array(65536 * 2 + offset);
      for (let h = 0; h < 65536; h++) {
        bytes[offset + 2 * h] = h & 0xff;
        bytes[offset + 2 * h + 1] = h >>> 8;
      }
      const got = decodeRow(bytes.subarray(offset), 'float16');
      const wrong: number[] = [];
      for (let h = 0; h < 65536; h++)
        if (!Object.is(got[h], fromHalf(h)) && !(Number.isNaN(got[h]) && Number.isNaN(fromHalf(h)))) wrong.push(h);
      expect(wrong).toEqual([]);
    }
    const v = grid(3, [5, 7]);
    const b = new Uint8Array(v.length * 4 + 3);
    const dv = new DataView(b.buffer);
    for (let i = 0; i < v.length; i++) dv.setFloat32(3 + 4 * i, v[i], true);
    expect(decodeRow(b.subarray(3), 'float32')).toEqual(v);
    const out = new Float32Array(v.length);
    expect(decodeRow(b.subarray(3), 'float32', out)).toBe(out);
  });
});

describe('boundedFeatureSource', () => {
  const shape = [7, 7, 16]; // a small grid: 49 positions x 16 channels
  const n = 48;
  let f16: string;
  let f32: string;
  beforeAll(async () => {
    f16 = await makeCache('grid16', shape, 'float16', n, { chunkBytes: 8 * 1024 });
    f32 = await makeCache('grid32', shape, 'float32', n, { chunkBytes: 8 * 1024 });
  });

  /** Epochs of shuffled batches (5 captions an image, as Flickr), checking every vector and the reader's bytes after each get. */
  const iterate = (
    cache: FeatureCache,
    src: ReturnType<typeof boundedFeatureSource>,
    budget: number,
    epochs: number,
  ) => {
    const examples = Array.from({ length: n * 5 }, (_, i) => key(i % n));
    let gets = 0;
    for (let e = 0; e < epochs; e++) {
      for (const batch of batchesOf(examples, 16, rng(e + 1))) {
        for (const k of batch) {
          const v = src.get(k);
          gets++;
          if (gets % 7 === 0) expect(v).toEqual(cache.get(k));
          expect(src.stats().residentBytes).toBeLessThanOrEqual(budget);
        }
      }
    }
    return gets;
  };

  it('never holds more than its budget over a cache larger than it (grid, float16, shuffled epochs)', async () => {
    const c = await openFeatureCache(f16);
    try {
      const budget = 20 * c.rowBytes; // 20 of 48 rows as stored; the whole set as float32 is 4.8x the budget
      expect(n * c.dim * 4).toBeGreaterThan(4 * budget);
      const src = boundedFeatureSource(c, { budgetBytes: budget });
      expect(src.shape).toEqual(shape);
      const gets = iterate(c, src, budget, 3);
      const st = src.stats();
      expect(st).toMatchObject({
        mode: 'stored',
        budgetBytes: budget,
        residentRows: 20,
        residentBytes: budget,
        peakResidentBytes: budget,
      });
      expect(st.reads).toBeGreaterThan(n); // dropped rows were read again
      expect(st.hits).toBeGreaterThan(0);
      expect(st.hits + st.reads).toBe(gets);
    } finally {
      c.close();
    }
  });

  it('float32 caches too; a budget under one row holds nothing; 0 holds nothing', async () => {
    const c = await openFeatureCache(f32);
    try {
      for (const budget of [7 * c.rowBytes + 5, c.rowBytes - 1, 0]) {
        const src = boundedFeatureSource(c, { budgetBytes: budget });
        iterate(c, src, budget, 1);
        expect(src.stats().mode).toBe('stored');
        expect(src.stats().peakResidentBytes).toBe(budget >= c.rowBytes ? 7 * c.rowBytes : 0);
      }
    } finally {
      c.close();
    }
  });

  it('keeps every vector decoded when the needed ones fit as float32 (fc2 fast path): one read each', async () => {
    const c = await openFeatureCache(f16);
    try {
      const budget = n * c.dim * 4;
      const src = boundedFeatureSource(c, { budgetBytes: budget });
      iterate(c, src, budget, 2);
      expect(src.stats()).toMatchObject({ mode: 'decoded', reads: n, residentRows: n, peakResidentBytes: budget });
      expect(src.get(key(3))).toBe(src.get(key(3))); // the kept array itself
      // `rows` (the images training will ask for) decides the mode, not the cache size
      expect(boundedFeatureSource(c, { budgetBytes: 10 * c.dim * 4, rows: 10 }).stats().mode).toBe('decoded');
      expect(boundedFeatureSource(c, { budgetBytes: budget - 1 }).stats().mode).toBe('stored');
      expect(() => src.get('nope.jpg')).toThrow(DataError);
    } finally {
      c.close();
    }
  });
});

describe('channelStats', () => {
  /** Per-channel mean and population std straight from the definition (float64, two passes). */
  const direct = (vectors: Float32Array[], channels: number) => {
    const mean = new Float64Array(channels);
    const cnt = new Float64Array(channels);
    for (const v of vectors)
      for (let i = 0; i < v.length; i++) {
        mean[i % channels] += v[i];
        cnt[i % channels]++;
      }
    for (let c = 0; c < channels; c++) mean[c] /= cnt[c];
    const sq = new Float64Array(channels);
    for (const v of vectors) for (let i = 0; i < v.length; i++) sq[i % channels] += (v[i] - mean[i % channels]) ** 2;
    return { mean, std: sq.map((s, c) => Math.sqrt(s / cnt[c])) };
  };
  const close = (got: Float32Array, want: Float64Array) => {
    for (let c = 0; c < want.length; c++)
      expect(Math.abs(got[c] - want[c])).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(want[c])));
  };

  it('matches a direct computation over positions and images: grid float16, through a tiny bounded reader', async () => {
    const shape = [4, 4, 8];
    const dir = await makeCache('stats16', shape, 'float16', 30, { chunkBytes: 1000 });
    const c = await openFeatureCache(dir);
    try {
      const train = Array.from({ length: 20 }, (_, i) => key(i + 5)); // a split: not every cached image
      const want = direct(
        train.map((k) => c.get(k)),
        8,
      );
      const src = boundedFeatureSource(c, { budgetBytes: 2 * c.rowBytes });
      const got = channelStats(src, [...train, ...train.slice(0, 5)], shape); // duplicates count once
      expect(got).toMatchObject({ images: 20, positions: 16 });
      expect(got.mean.length).toBe(8);
      close(got.mean, want.mean);
      close(got.std, want.std);
      expect(src.stats().peakResidentBytes).toBeLessThanOrEqual(2 * c.rowBytes);
      // straight from the cache (rows read in chunk order) gives the same
      const again = channelStats(c, train.slice().reverse(), shape);
      close(again.mean, want.mean);
      close(again.std, want.std);
      const all = channelStats(c, c.keys(), shape);
      expect(all.images).toBe(30);
      expect(Math.abs(all.mean[7] - got.mean[7])).toBeGreaterThan(0); // the split matters
    } finally {
      c.close();
    }
  });

  it('fc-like vectors (every unit a channel), a large offset, and shape mismatches', async () => {
    const shape = [64];
    const dir = await makeCache('stats32', shape, 'float32', 25, {}, 1e4);
    const c = await openFeatureCache(dir);
    try {
      const want = direct(
        c.keys().map((k) => c.get(k)),
        64,
      );
      const got = channelStats(c, c.keys(), shape);
      expect(got).toMatchObject({ images: 25, positions: 1 });
      close(got.mean, want.mean);
      for (let i = 0; i < 64; i++)
        expect(Math.abs(got.std[i] - want.std[i])).toBeLessThanOrEqual(1e-4 * want.std[i] + 1e-6);
      expect(() => channelStats(c, c.keys(), [8, 9])).toThrow(/shape \[8,9\] does not match vectors of 64 values/);
      const empty = channelStats(c, [], shape);
      expect(empty.images).toBe(0);
      expect([...empty.std].every((v) => v === 0)).toBe(true);
    } finally {
      c.close();
    }
  });
});
