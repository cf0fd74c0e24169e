// Weights: seeded random init, validation against the spec, Keras .h5 reading (all naming styles),
// TF.js model.json reading, and loadVgg16Weights' resolution, fingerprints and errors.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelError } from '../../../src/errors.js';
import { VGG16_LAYERS, VGG16_PARAMS_NO_TOP, VGG16_PARAMS_WITH_TOP } from '../../../src/features/vgg16/spec.js';
import {
  checkWeights,
  countParams,
  fillGlorot,
  loadVgg16Weights,
  randomVgg16Weights,
  specParams,
} from '../../../src/features/vgg16/weights.js';
import { weightRole } from '../../../src/features/vgg16/h5.js';
import { tfjsWeightTarget } from '../../../src/features/vgg16/tfjsFolder.js';
import { KERAS_VGG16_FILES, weightsCacheDir } from '../../../src/features/weights/cache.js';
import { sidecarFor } from '../../../src/features/weights/hash.js';
import { rng } from '../../../src/util/random.js';
import { MINI_LAYERS, fixture, miniWeights } from './mini.js';

let tmp: string;
beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-vgg16-'));
  process.env.CAPTIONER_CACHE = path.join(tmp, 'cache'); // digests of loaded files go here
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

/** Byte equality (vitest's toEqual walks big typed arrays slowly). */
function sameBytes(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

function expectSameWeights(
  a: Map<string, { kernel: Float32Array; kernelShape: number[]; bias: Float32Array }>,
  b: typeof a,
) {
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  for (const [name, w] of a) {
    const v = b.get(name)!;
    expect(v.kernelShape, name).toEqual(w.kernelShape);
    expect(v.kernel, name).toEqual(w.kernel);
    expect(v.bias, name).toEqual(w.bias);
  }
}

describe('spec parameter counts', () => {
  it('match Keras with and without the top', () => {
    expect(specParams(VGG16_LAYERS, true)).toBe(VGG16_PARAMS_WITH_TOP);
    expect(specParams(VGG16_LAYERS, false)).toBe(VGG16_PARAMS_NO_TOP);
  });
});

describe('randomVgg16Weights', () => {
  it('fillGlorot is mulberry32 rng(seed), (r*2-1)*limit in float32', () => {
    const out = new Float32Array(1000);
    fillGlorot(out, 987654321, 0.3);
    const r = rng(987654321);
    for (let i = 0; i < out.length; i++) expect(out[i]).toBe(Math.fround((r() * 2 - 1) * 0.3));
  });

  it('full VGG16: Keras parameter counts, glorot bounds, zero biases, deterministic per seed', () => {
    const w = randomVgg16Weights(7);
    expect(countParams(w)).toBe(VGG16_PARAMS_WITH_TOP);
    expect(checkWeights(w, 'random')).toEqual({ includeTop: true });
    const conv = w.get('block3_conv2')!;
    const limit = Math.sqrt(6 / (9 * 256 + 9 * 256));
    let maxAbs = 0;
    let sum = 0;
    for (const v of conv.kernel) {
      maxAbs = Math.max(maxAbs, Math.abs(v));
      sum += v;
    }
    expect(maxAbs).toBeLessThanOrEqual(limit);
    expect(maxAbs).toBeGreaterThan(limit * 0.99);
    expect(Math.abs(sum / conv.kernel.length)).toBeLessThan(limit * 0.01);
    expect(conv.bias.every((b) => b === 0)).toBe(true);
    const fc1 = w.get('fc1')!;
    expect(fc1.kernelShape).toEqual([25088, 4096]);
    const fcLimit = Math.sqrt(6 / (25088 + 4096));
    let fcMax = 0;
    for (let i = 0; i < fc1.kernel.length; i += 97) fcMax = Math.max(fcMax, Math.abs(fc1.kernel[i]));
    expect(fcMax).toBeLessThanOrEqual(fcLimit);

    // no top: the same conv weights (each layer has its own stream), no dense layers
    const noTop = randomVgg16Weights(7, { includeTop: false });
    expect(countParams(noTop)).toBe(VGG16_PARAMS_NO_TOP);
    expect(checkWeights(noTop, 'random')).toEqual({ includeTop: false });
    expect(sameBytes(noTop.get('block5_conv3')!.kernel, w.get('block5_conv3')!.kernel)).toBe(true);
    expect(sameBytes(noTop.get('block1_conv1')!.kernel, w.get('block1_conv1')!.kernel)).toBe(true);
    // layers differ from each other; seeds differ
    expect(w.get('block2_conv2')!.kernel.subarray(0, 50)).not.toEqual(w.get('block2_conv1')!.kernel.subarray(0, 50));
  });

  it('same seed gives the same weights, another seed other weights', () => {
    const a = randomVgg16Weights(3, { layers: MINI_LAYERS });
    const b = randomVgg16Weights(3, { layers: MINI_LAYERS });
    const c = randomVgg16Weights(4, { layers: MINI_LAYERS });
    expectSameWeights(a, b);
    expect(a.get('fc1')!.kernel).not.toEqual(c.get('fc1')!.kernel);
  });
});

describe('checkWeights', () => {
  it('names the layer with a wrong shape or missing weights', () => {
    const w = miniWeights();
    expect(checkWeights(w, 'x', MINI_LAYERS)).toEqual({ includeTop: true });
    expect(() => checkWeights(w, 'x.h5', VGG16_LAYERS)).toThrow(
      /x\.h5: layer block1_conv1: kernel shape \[3, 3, 3, 2\], expected \[3, 3, 3, 64\]/,
    );
    const noFc2 = miniWeights();
    noFc2.delete('fc2');
    expect(() => checkWeights(noFc2, 'x.h5', MINI_LAYERS)).toThrow(/no weights for layer fc2/);
    const noConv = miniWeights();
    noConv.delete('block1_conv2');
    expect(() => checkWeights(noConv, 'x.h5', MINI_LAYERS)).toThrow(ModelError);
    const extra = miniWeights();
    extra.set('block9_conv1', extra.get('fc1')!);
    expect(() => checkWeights(extra, 'x.h5', MINI_LAYERS)).toThrow(/unexpected layer block9_conv1/);
  });
});

describe('Keras .h5 files', () => {
  it('recognises kernel and bias names of every Keras generation', () => {
    expect(weightRole('block1_conv1_W_1:0')).toBe('kernel');
    expect(weightRole('block1_conv1_b_1:0')).toBe('bias');
    expect(weightRole('block1_conv1_W')).toBe('kernel');
    expect(weightRole('block1_conv1/kernel:0')).toBe('kernel');
    expect(weightRole('vgg16/fc1/bias:0')).toBe('bias');
    expect(weightRole('fc1/gamma:0')).toBe(null);
  });

  for (const file of ['mini_legacy.h5', 'mini_keras2.h5', 'mini_prefixed_model.h5']) {
    it(`reads ${file} (names mapped, values exact)`, async () => {
      const r = await loadVgg16Weights(fixture(file), { seed: 0, layers: MINI_LAYERS });
      expect(r.includeTop).toBe(true);
      expect(r.source).toBe(fixture(file));
      expect(r.fingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);
      expectSameWeights(miniWeights(), r.weights);
    });
  }

  it('reads a no-top file and refuses it when the top is required', async () => {
    const r = await loadVgg16Weights(fixture('mini_legacy_notop.h5'), { seed: 0, layers: MINI_LAYERS });
    expect(r.includeTop).toBe(false);
    expectSameWeights(miniWeights({ includeTop: false }), r.weights);
    await expect(
      loadVgg16Weights(fixture('mini_legacy_notop.h5'), { seed: 0, layers: MINI_LAYERS, requireTop: true }),
    ).rejects.toThrow(/no fc1\/fc2\/predictions.*captioner weights vgg16/);
  });

  it('names a missing layer and a mismatched shape', async () => {
    await expect(loadVgg16Weights(fixture('mini_missing_conv2.h5'), { seed: 0, layers: MINI_LAYERS })).rejects.toThrow(
      /mini_missing_conv2\.h5: no weights for layer block1_conv2/,
    );
    // the real spec against the mini file: the first layer's kernel is the wrong shape
    await expect(loadVgg16Weights(fixture('mini_keras2.h5'), { seed: 0 })).rejects.toThrow(
      /layer block1_conv1: kernel .* has shape \[3, 3, 3, 2\], expected \[3, 3, 3, 64\]/,
    );
  });

  it('gives clear errors for missing and non-HDF5 files', async () => {
    await expect(loadVgg16Weights(path.join(tmp, 'nope.h5'), { seed: 0 })).rejects.toThrow(
      /nope\.h5: weights file not found/,
    );
    const bad = path.join(tmp, 'bad.h5');
    await fs.writeFile(bad, 'not hdf5 at all');
    await expect(loadVgg16Weights(bad, { seed: 0 })).rejects.toThrow(/bad\.h5: not an HDF5 file/);
  });

  it('caches the file digest in a sidecar keyed by size and mtime', async () => {
    const copy = path.join(tmp, 'copy.h5');
    await fs.copyFile(fixture('mini_legacy.h5'), copy);
    const a = await loadVgg16Weights(copy, { seed: 0, layers: MINI_LAYERS });
    const sidecar = sidecarFor(copy, weightsCacheDir());
    expect(sidecar.startsWith(path.join(tmp, 'cache', 'weights', 'digests'))).toBe(true);
    const side = JSON.parse(await fs.readFile(sidecar, 'utf8'));
    expect(`sha256:${side.sha256}`).toBe(a.fingerprint);
    // a doctored sidecar is believed while size+mtime match...
    await fs.writeFile(sidecar, JSON.stringify({ ...side, sha256: 'f'.repeat(64) }));
    expect((await loadVgg16Weights(copy, { seed: 0, layers: MINI_LAYERS })).fingerprint).toBe(
      `sha256:${'f'.repeat(64)}`,
    );
    // ...and ignored once the file changes
    const later = new Date(Date.now() + 5000);
    await fs.utimes(copy, later, later);
    expect((await loadVgg16Weights(copy, { seed: 0, layers: MINI_LAYERS })).fingerprint).toBe(a.fingerprint);
  });
});

describe('TF.js layers-model folders', () => {
  it('maps manifest weight names to layers', () => {
    const names = new Set(['block1_conv1', 'fc1']);
    expect(tfjsWeightTarget('block1_conv1/kernel', names)).toEqual({ layer: 'block1_conv1', role: 'kernel' });
    expect(tfjsWeightTarget('vgg16/fc1/bias', names)).toEqual({ layer: 'fc1', role: 'bias' });
    expect(tfjsWeightTarget('fc1_1/kernel', names)).toEqual({ layer: 'fc1', role: 'kernel' });
    expect(tfjsWeightTarget('dense/kernel', names)).toBe(null);
    expect(tfjsWeightTarget('fc1/moving_mean', names)).toBe(null);
  });

  /** Write the mini weights as a TF.js folder: two shards (a weight straddles them), an unrelated weight, one uint8-quantized bias. */
  async function writeMiniTfjs(dir: string): Promise<void> {
    await fs.mkdir(dir, { recursive: true });
    const w = miniWeights();
    const entries: object[] = [];
    const chunks: Buffer[] = [];
    const extra = new Float32Array([1, 2, 3, 4, 5]);
    entries.push({ name: 'some_other/kernel', shape: [5], dtype: 'float32' });
    chunks.push(Buffer.from(extra.buffer));
    for (const [name, lw] of w) {
      entries.push({ name: `vgg16/${name}/kernel`, shape: lw.kernelShape, dtype: 'float32' });
      chunks.push(Buffer.from(lw.kernel.buffer));
      if (name === 'fc2') {
        // bias (-3/4, -2/4, -1/4) quantized: min -0.75, scale 0.25
        entries.push({
          name: `vgg16/${name}/bias`,
          shape: [3],
          dtype: 'float32',
          quantization: { dtype: 'uint8', scale: 0.25, min: -0.75 },
        });
        chunks.push(Buffer.from([0, 1, 2]));
      } else {
        entries.push({ name: `vgg16/${name}/bias`, shape: [lw.bias.length], dtype: 'float32' });
        chunks.push(Buffer.from(lw.bias.buffer));
      }
    }
    const all = Buffer.concat(chunks);
    const cut = 101; // not a multiple of 4: the shard boundary splits a float
    await fs.writeFile(path.join(dir, 'group1-shard1of2.bin'), all.subarray(0, cut));
    await fs.writeFile(path.join(dir, 'group1-shard2of2.bin'), all.subarray(cut));
    await fs.writeFile(
      path.join(dir, 'model.json'),
      JSON.stringify({
        format: 'layers-model',
        modelTopology: {},
        weightsManifest: [{ paths: ['group1-shard1of2.bin', 'group1-shard2of2.bin'], weights: entries }],
      }),
    );
  }

  it('reads the weights by name from the shards (folder or model.json path)', async () => {
    const dir = path.join(tmp, 'tfjs-mini');
    await writeMiniTfjs(dir);
    for (const spec of [dir, path.join(dir, 'model.json')]) {
      const r = await loadVgg16Weights(spec, { seed: 0, layers: MINI_LAYERS });
      expect(r.includeTop).toBe(true);
      expect(r.source).toBe(path.join(dir, 'model.json'));
      expect(r.fingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);
      expectSameWeights(miniWeights(), r.weights);
    }
  });

  it('names a layer whose shape does not fit and a shard that is missing', async () => {
    const dir = path.join(tmp, 'tfjs-bad');
    await writeMiniTfjs(dir);
    await expect(loadVgg16Weights(dir, { seed: 0 })).rejects.toThrow(
      /layer block1_conv1: kernel vgg16\/block1_conv1\/kernel has shape \[3, 3, 3, 2\], expected \[3, 3, 3, 64\]/,
    );
    await fs.rm(path.join(dir, 'group1-shard2of2.bin'));
    await expect(loadVgg16Weights(dir, { seed: 0, layers: MINI_LAYERS })).rejects.toThrow(
      /shard group1-shard2of2\.bin not found/,
    );
    await expect(loadVgg16Weights(tmp, { seed: 0 })).rejects.toThrow(/folder without model\.json/);
  });
});

describe('loadVgg16Weights', () => {
  it('random: fingerprint random:seed=N, optional top', async () => {
    const r = await loadVgg16Weights('random', { seed: 11, includeTop: false, layers: MINI_LAYERS });
    expect(r.fingerprint).toBe('random:seed=11');
    expect(r.source).toBe('random');
    expect(r.includeTop).toBe(false);
    expectSameWeights(randomVgg16Weights(11, { includeTop: false, layers: MINI_LAYERS }), r.weights);
  });

  it('auto: the cached full file, else the no-top one, else the command to run', async () => {
    const cache = path.join(tmp, 'cache-auto');
    await fs.mkdir(cache, { recursive: true });
    await expect(loadVgg16Weights('auto', { seed: 0, cacheDir: cache, layers: MINI_LAYERS })).rejects.toThrow(
      /run `captioner weights vgg16`/,
    );
    await fs.copyFile(fixture('mini_legacy_notop.h5'), path.join(cache, KERAS_VGG16_FILES.notop.name));
    const notop = await loadVgg16Weights('auto', { seed: 0, cacheDir: cache, layers: MINI_LAYERS });
    expect(notop.includeTop).toBe(false);
    await expect(
      loadVgg16Weights('auto', { seed: 0, cacheDir: cache, layers: MINI_LAYERS, requireTop: true }),
    ).rejects.toThrow(/only the no-top VGG16 file is cached/);
    await fs.copyFile(fixture('mini_keras2.h5'), path.join(cache, KERAS_VGG16_FILES.top.name));
    const full = await loadVgg16Weights('auto', { seed: 0, cacheDir: cache, layers: MINI_LAYERS, requireTop: true });
    expect(full.includeTop).toBe(true);
    expect(full.source).toBe(path.join(cache, KERAS_VGG16_FILES.top.name));
  });

  it('a path that does not exist says what encoder.weights takes', async () => {
    await expect(loadVgg16Weights(path.join(tmp, 'missing'), { seed: 0 })).rejects.toThrow(
      /weights file not found.*auto, random, a Keras \.h5 file or a TF\.js model\.json/,
    );
  });
});
