// Encoders: a user ONNX model with its preprocessing, and VGG16 on onnxruntime vs TensorFlow.js
// (same random weights, same features), with no tensor leaks on the tfjs side.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EncoderSchema } from '../../src/config/schema.js';
import { createEncoder } from '../../src/features/encoder.js';
import { createSession, floatTensor } from '../../src/features/onnx/runtime.js';
import type { LoadedVgg16Weights } from '../../src/features/vgg16/weights.js';
import { tf } from '../../src/tf/tf.js';
import { rng } from '../../src/util/random.js';
import { randomWeights, relMaxDiff, syntheticRgb, tinyEncoderOnnx } from './helpers.js';

let work: string;
beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'cap-enc-'));
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

describe('user ONNX encoder (encoder.type onnx)', () => {
  const S = 32;
  for (const layout of ['nchw', 'nhwc'] as const) {
    it(`applies range/mean/std/channel order in ${layout} and returns the model output`, async () => {
      const file = path.join(work, `tiny-${layout}.onnx`);
      await fs.writeFile(file, tinyEncoderOnnx({ size: S, layout }));
      const onnx = { path: file, layout, channelOrder: 'bgr' as const, range: '0-1' as const, mean: [0.1, 0.2, 0.3], std: [0.5, 0.25, 0.2], interpolation: 'bilinear' as const };
      const enc = await createEncoder(EncoderSchema.parse({ type: 'onnx', onnx }), { threads: 1 });
      try {
        expect(enc.inputSize).toBe(S);
        expect(enc.info).toMatchObject({ name: `onnx:tiny-${layout}.onnx`, runtime: 'onnx', layer: 'features', shape: [8] });
        expect(enc.info.preprocessing).toMatchObject({ size: S, interpolation: 'bilinear', mode: 'normalise', channelOrder: 'bgr', layout });
        const imgs = [syntheticRgb(1, S), syntheticRgb(2, S), syntheticRgb(3, S)];
        const got = await enc.encode(imgs);
        expect(got.length).toBe(3);
        // reference: preprocess by hand, run the raw session
        const raw = await createSession(file, { threads: 1 });
        try {
          for (let n = 0; n < 3; n++) {
            const x = new Float32Array(S * S * 3);
            for (let p = 0; p < S * S; p++)
              for (let c = 0; c < 3; c++) {
                const v = (imgs[n][p * 3 + (2 - c)] / 255 - onnx.mean[c]) / onnx.std[c]; // model channel c = BGR
                x[layout === 'nchw' ? c * S * S + p : p * 3 + c] = v;
              }
            const out = await raw.run({ x: await floatTensor(x, layout === 'nchw' ? [1, 3, S, S] : [1, S, S, 3]) });
            expect(relMaxDiff(got[n], out.features.data as Float32Array)).toBeLessThan(1e-5);
          }
        } finally {
          await raw.release();
        }
      } finally {
        await enc.dispose();
      }
    });
  }

  it('runs a model with a fixed batch of 1 image by image', async () => {
    const file = path.join(work, 'tiny-b1.onnx');
    await fs.writeFile(file, tinyEncoderOnnx({ size: 32, batch: 1 }));
    const dyn = path.join(work, 'tiny-dyn.onnx');
    await fs.writeFile(dyn, tinyEncoderOnnx({ size: 32 }));
    const a = await createEncoder(EncoderSchema.parse({ type: 'onnx', onnx: { path: file } }), { threads: 1 });
    const b = await createEncoder(EncoderSchema.parse({ type: 'onnx', onnx: { path: dyn } }), { threads: 1 });
    try {
      const imgs = [syntheticRgb(1, 32), syntheticRgb(2, 32), syntheticRgb(3, 32)];
      const [x, y] = [await a.encode(imgs), await b.encode(imgs)];
      expect(x.length).toBe(3);
      x.forEach((v, i) => expect(relMaxDiff(v, y[i])).toBeLessThan(1e-6));
    } finally {
      await a.dispose();
      await b.dispose();
    }
  });

  it('explains a missing model file, a bad input name and a size mismatch', async () => {
    await expect(createEncoder(EncoderSchema.parse({ type: 'onnx', onnx: { path: path.join(work, 'nope.onnx') } }), { threads: 1 })).rejects.toThrow(/nope\.onnx: no such file \(encoder\.onnx\.path/);
    const file = path.join(work, 'tiny.onnx');
    await fs.writeFile(file, tinyEncoderOnnx({ size: 32 }));
    await expect(createEncoder(EncoderSchema.parse({ type: 'onnx', onnx: { path: file, input: 'img' } }), { threads: 1 })).rejects.toThrow(/has no input "img"; its inputs: "x" float32 \[N, 3, 32, 32\]\. Set encoder\.onnx\.input/);
    await expect(createEncoder(EncoderSchema.parse({ type: 'onnx', onnx: { path: file, size: 64 } }), { threads: 1 })).rejects.toThrow(/takes 32x32 images, but encoder\.onnx\.size is 64; set it to 32/);
    await expect(createEncoder(EncoderSchema.parse({ type: 'onnx', runtime: 'tfjs', onnx: { path: file } }), { threads: 1 })).rejects.toThrow(/runs on onnxruntime only/);
    await fs.writeFile(path.join(work, 'junk.onnx'), 'not a model');
    await expect(createEncoder(EncoderSchema.parse({ type: 'onnx', onnx: { path: path.join(work, 'junk.onnx') } }), { threads: 1 })).rejects.toThrow(/junk\.onnx: is not an ONNX model/);
  });
});

describe('VGG16: onnxruntime and TensorFlow.js agree (random weights)', () => {
  let loaded: LoadedVgg16Weights;
  beforeAll(async () => {
    const weights = await randomWeights(77);
    const r = rng(6); // non-zero biases, so their handling is compared too
    for (const w of weights.values()) for (let i = 0; i < w.bias.length; i++) w.bias[i] = (r() - 0.5) * 0.2;
    loaded = { weights, fingerprint: 'random:seed=77', source: 'random', includeTop: true };
  }, 60_000);

  it('fc2 of one image: max abs diff < 1e-4 relative; same fingerprint; no tensor leaks', async () => {
    const cfg = (runtime: 'onnx' | 'tfjs') => EncoderSchema.parse({ type: 'vgg16', runtime, weights: 'random', seed: 77, layer: 'fc2' });
    const img = syntheticRgb(5);
    const onnx = await createEncoder(cfg('onnx'), { threads: 0, weights: loaded });
    let a: Float32Array;
    try {
      expect(onnx.info).toMatchObject({ name: 'vgg16', runtime: 'onnx', layer: 'fc2', shape: [4096], weights: 'random', weightsFingerprint: 'random:seed=77' });
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
  }, 180_000);

  it('block5_conv3 (after ReLU) and block5_pool: NHWC [positions, channels], runtimes agree, pool = 2x2 max of conv3', async () => {
    const cfg = (runtime: 'onnx' | 'tfjs', layer: string) => EncoderSchema.parse({ type: 'vgg16', runtime, weights: 'random', seed: 77, layer });
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
    const pool = { onnx: await run('onnx', 'block5_pool', imgs.slice(0, 1)), tfjs: await run('tfjs', 'block5_pool', imgs.slice(0, 1)) };
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
            for (let dy = 0; dy < 2; dy++) for (let dx = 0; dx < 2; dx++) m = Math.max(m, c3[((2 * y + dy) * 14 + 2 * x + dx) * 512 + c]);
            worst = Math.max(worst, Math.abs(m - p[(y * 7 + x) * 512 + c]));
          }
      expect(worst).toBe(0);
    }
    for (let i = 0; i < imgs.length; i++) expect(relMaxDiff(conv.onnx[i], conv.tfjs[i])).toBeLessThan(1e-4);
    expect(relMaxDiff(pool.onnx[0], pool.tfjs[0])).toBeLessThan(1e-4);
  }, 300_000);
});
