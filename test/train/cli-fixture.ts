// A prepared folder and a feature cache on disk, written with the real writers from the synthetic data
// (for tests that run `captioner train` through the built CLI).
import * as path from 'node:path';
import { writePrepared, type PreparedManifest } from '../../src/prep/prepared.js';
import { openCacheWriter, type CacheSpec } from '../../src/features/cache.js';
import { synthetic } from './synthetic.js';

/**
 * <dir>/prepared and <dir>/features (16 training images, 8 validation); `dropKey` is left out of the cache.
 * `grid` [H, W, C]: a grid cache (layer block5_pool, H*W*C values per image, for attention models) instead
 * of one 12-d vector per image.
 */
export async function writeFixture(dir: string, dropKey?: string, grid?: [number, number, number]): Promise<void> {
  const s = synthetic({ train: 16, val: 8, ...(grid ? { dim: grid[0] * grid[1] * grid[2] } : {}) });
  await writePrepared(path.join(dir, 'prepared'), {
    vocab: s.prepared.vocab,
    splits: s.prepared.splits,
    manifest: {
      kind: 'captioner.prepared',
      version: 1,
      name: 't',
      createdAt: new Date().toISOString(),
    } as unknown as Omit<PreparedManifest, 'fingerprint' | 'files'>,
  });
  const spec = {
    encoder: {
      name: 'synthetic',
      fingerprint: 'syn',
      runtime: 'none',
      detail: 'test',
      weights: 'random',
      weightsFingerprint: 'w',
      layer: grid ? 'block5_pool' : 'fc2',
      preprocessing: {
        size: 224,
        resize: 'fill',
        interpolation: 'nearest',
        alpha: 'white',
        mode: 'caffe',
        mean: [1, 2, 3],
      },
      shape: grid ?? [s.features.dim],
    },
    dtype: 'float32',
  } as unknown as CacheSpec;
  const w = await openCacheWriter(path.join(dir, 'features'), spec, { chunkSize: 64 });
  for (const [k, v] of s.features.map) if (k !== dropKey) await w.add(k, v);
  await w.close();
}
