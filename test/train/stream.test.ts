// Training streams its features from the cache through the bounded reader: over a cache whose vectors
// (as float32) are larger than the budget, the reader never holds more than the budget, and training
// gives exactly what it gives with every vector in memory.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigSchema, type Config } from '../../src/config/schema.js';
import { boundedFeatureSource, openCacheWriter, openFeatureCache, type CacheSpec } from '../../src/features/cache.js';
import { tf } from '../../src/tf/tf.js';
import { train, type FeatureInfo } from '../../src/train/run.js';
import { synthetic } from './synthetic.js';

let work: string;
beforeAll(async () => {
  await tf.setBackend('cpu');
  process.env.CAPTIONER_QUIET = '1';
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-stream-'));
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

const cfg = (): Config =>
  ConfigSchema.parse({
    model: { embedDim: 8, units: 12, imageUnits: 12, hiddenUnits: 12, dropout: 0.1 },
    train: { epochs: 2, batchSize: 16, learningRate: 0.01, patience: 0, seed: 3 },
  });

describe('training from the feature cache', () => {
  it('holds at most readCacheBytes of vectors and trains as with everything in memory', async () => {
    const s = synthetic({ train: 48, val: 16, dim: 12 });
    const spec: CacheSpec = {
      encoder: {
        name: 'vgg16',
        fingerprint: 'sha256:enc',
        runtime: 'onnx',
        detail: 'test',
        weights: 'random',
        weightsFingerprint: 'random:seed=1',
        layer: 'fc2',
        shape: [12],
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
      dtype: 'float16',
    };
    const dir = path.join(work, 'features');
    const w = await openCacheWriter(dir, spec, { chunkBytes: 200 });
    for (const [k, v] of s.features.map) await w.add(k, v);
    await w.close();
    const cache = await openFeatureCache(dir);
    try {
      const needed = [...s.prepared.splits.train, ...s.prepared.splits.val].length;
      const budget = 10 * cache.rowBytes; // 10 of 64 images as stored; all of them as float32 is 12.8x this
      expect(needed * cache.dim * 4).toBeGreaterThan(10 * budget);
      const src = boundedFeatureSource(cache, { budgetBytes: budget, rows: needed });
      let most = 0;
      const watched = {
        ...src,
        get(k: string) {
          const v = src.get(k);
          most = Math.max(most, src.stats().residentBytes);
          return v;
        },
      };
      const info: FeatureInfo = {
        dir,
        fingerprint: cache.manifest.fingerprint,
        encoder: { name: 'vgg16', layer: 'fc2' },
        shape: [12],
        dtype: 'float16',
      };
      const before = tf.memory().numTensors;
      const a = await train({
        config: cfg(),
        prepared: s.prepared,
        features: watched,
        featureInfo: info,
        out: path.join(work, 'a'),
        backend: 'cpu',
      });
      expect(tf.memory().numTensors).toBe(before);
      const st = src.stats();
      expect(st.mode).toBe('stored');
      expect(most).toBeGreaterThan(0);
      expect(most).toBeLessThanOrEqual(budget);
      expect(st.peakResidentBytes).toBeLessThanOrEqual(budget);
      expect(st.reads).toBeGreaterThan(needed); // rows were dropped and read again
      // the same run with every vector kept decoded
      const all = boundedFeatureSource(cache, { budgetBytes: needed * cache.dim * 4, rows: needed });
      const b = await train({
        config: cfg(),
        prepared: s.prepared,
        features: all,
        featureInfo: info,
        out: path.join(work, 'b'),
        backend: 'cpu',
      });
      expect(all.stats().mode).toBe('decoded');
      expect(a.status).toBe('completed');
      expect(a.history.map((h) => [h.trainLoss, h.valLoss])).toEqual(b.history.map((h) => [h.trainLoss, h.valLoss]));
    } finally {
      cache.close();
    }
  }, 120_000);
});
