// VGG16 on onnxruntime vs TensorFlow.js (same random weights, same features), with no tensor leaks on the
// tfjs side: end-to-end tier (npm run test:e2e).
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EncoderSchema } from '../../../src/config/schema.js';
import { createEncoder } from '../../../src/features/encoder.js';
import type { LoadedVgg16Weights } from '../../../src/features/vgg16/weights.js';
import { tf } from '../../../src/tf/tf.js';
import { rng } from '../../../src/util/random.js';
import { randomWeights, relMaxDiff, syntheticRgb } from '../helpers.js';

let work: string;
beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'cap-enc-'));
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

describe('VGG16: onnxruntime and TensorFlow.js agree (random weights)', () => {
  let loaded: LoadedVgg16Weights;
  beforeAll(async () => {
    const weights = await randomWeights(77);
    const r = rng(6); // non-zero biases, so their handling is compared too
    for (const w of weights.values()) for (let i = 0; i < w.bias.length; i++) w.bias[i] = (r() - 0.5) * 0.2;
    loaded = { weights, fingerprint: 'random:seed=77', source: 'random', includeTop: true };
  });

  it('fc2 of one image: max abs diff < 1e-4 relative; same fingerprint; no tensor leaks', async () => {
    const cfg = (runtime: 'onnx' | 'tfjs') =>
      EncoderSchema.parse({ type: 'vgg16', runtime, weights: 'random', seed: 77, layer: 'fc2' });
    const img = syntheticRgb(5);
    const onnx = await createEncoder(cfg('onnx'), { threads: 0, weights: loaded });
    let a: Float32Array;
    try {
      expect(onnx.info).toMatchObject({
        name: 'vgg16',
        runtime: 'onnx',
        layer: 'fc2',
        shape: [4096],
        weights: 'random',
        weightsFingerprint: 'random:seed=77',
      });
      [a] = await onnx.encode([img]);
    } finally {
      await onnx.dispose();
    }
    const before = tf.memory().numTensors;
    const tfjs = await createEncoder(cfg('tfjs'), { threads: 0, backend: 'wasm', weights: loaded });
    let b: Float32Array;
    try {
      expect(tfjs.info.runtime).toBe('tfjs');
      expect(tfjs.info.detail).toMatch(/wasm/);
      expect(tfjs.info.fingerprint).toBe(onnx.info.fingerprint);
      const during = tf.memory().numTensors;
      [b] = await tfjs.encode([img]);
      expect(tf.memory().numTensors).toBe(during);
    } finally {
      await tfjs.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
    expect(a.length).toBe(4096);
    expect(a.some((v) => v > 0)).toBe(true);
    expect(relMaxDiff(a, b)).toBeLessThan(1e-4);
  });

  it('block5_conv3 (after ReLU) and block5_pool: NHWC [positions, channels], runtimes agree, pool = 2x2 max of conv3', async () => {
    const cfg = (runtime: 'onnx' | 'tfjs', layer: string) =>
      EncoderSchema.parse({ type: 'vgg16', runtime, weights: 'random', seed: 77, layer });
    const imgs = [syntheticRgb(5), syntheticRgb(8)];
    const run = async (runtime: 'onnx' | 'tfjs', layer: string, images: Uint8Array[]) => {
      const before = tf.memory().numTensors;
      const enc = await createEncoder(cfg(runtime, layer), { threads: 0, backend: 'wasm', weights: loaded });
      try {
        expect(enc.info.shape).toEqual(layer === 'block5_conv3' ? [14, 14, 512] : [7, 7, 512]);
        return await enc.encode(images);
      } finally {
        await enc.dispose();
        expect(tf.memory().numTensors).toBe(before);
      }
    };
    const conv = { onnx: await run('onnx', 'block5_conv3', imgs), tfjs: await run('tfjs', 'block5_conv3', imgs) };
    const pool = {
      onnx: await run('onnx', 'block5_pool', imgs.slice(0, 1)),
      tfjs: await run('tfjs', 'block5_pool', imgs.slice(0, 1)),
    };
    for (const rt of ['onnx', 'tfjs'] as const) {
      for (const v of conv[rt]) {
        expect(v.length).toBe(14 * 14 * 512);
        // taken after the ReLU: nothing negative, and some units are cut to exactly 0
        expect(v.reduce((a, b) => Math.min(a, b), Infinity)).toBe(0);
        expect(v.some((x) => x > 0)).toBe(true);
      }
      expect(relMaxDiff(conv[rt][0], conv[rt][1])).toBeGreaterThan(1e-3); // one vector per image, in order
      // NHWC flattened: value (y, x, c) at (y * W + x) * C + c; the 2x2 max pool in that layout must give
      // block5_pool exactly (an NCHW-flattened grid would not)
      const c3 = conv[rt][0];
      const p = pool[rt][0];
      expect(p.length).toBe(7 * 7 * 512);
      let worst = 0;
      for (let y = 0; y < 7; y++)
        for (let x = 0; x < 7; x++)
          for (let c = 0; c < 512; c++) {
            let m = -Infinity;
            for (let dy = 0; dy < 2; dy++)
              for (let dx = 0; dx < 2; dx++) m = Math.max(m, c3[((2 * y + dy) * 14 + 2 * x + dx) * 512 + c]);
            worst = Math.max(worst, Math.abs(m - p[(y * 7 + x) * 512 + c]));
          }
      expect(worst).toBe(0);
    }
    for (let i = 0; i < imgs.length; i++) expect(relMaxDiff(conv.onnx[i], conv.tfjs[i])).toBeLessThan(1e-4);
    expect(relMaxDiff(pool.onnx[0], pool.tfjs[0])).toBeLessThan(1e-4);
  });
});
