// VGG16's ONNX graph (src/features/vgg16/onnx.ts) with random weights, run in onnxruntime against plain-JS
// Keras arithmetic: end-to-end tier (npm run test:e2e), as the full graph takes tens of seconds.
import { beforeAll, describe, expect, it } from 'vitest';
import { createSession, floatTensor as ortTensor } from '../../../src/features/onnx/runtime.js';
import { vgg16Onnx } from '../../../src/features/vgg16/onnx.js';
import { VGG16_LAYERS, type Vgg16Weights } from '../../../src/features/vgg16/spec.js';
import { rng } from '../../../src/util/random.js';
import { randomWeights, relMaxDiff, preprocess, syntheticRgb } from '../helpers.js';

/** Plain-JS Keras conv 3x3 same + relu, NHWC in/out, HWIO kernel. */
function convRelu(
  x: Float32Array,
  side: number,
  w: { kernel: Float32Array; bias: Float32Array },
  ci: number,
  co: number,
): Float32Array {
  const y = new Float32Array(side * side * co);
  for (let oy = 0; oy < side; oy++)
    for (let ox = 0; ox < side; ox++)
      for (let o = 0; o < co; o++) {
        let s = w.bias[o];
        for (let ky = 0; ky < 3; ky++)
          for (let kx = 0; kx < 3; kx++) {
            const iy = oy + ky - 1;
            const ix = ox + kx - 1;
            if (iy < 0 || ix < 0 || iy >= side || ix >= side) continue;
            for (let c = 0; c < ci; c++)
              s += x[(iy * side + ix) * ci + c] * w.kernel[((ky * 3 + kx) * ci + c) * co + o];
          }
        y[(oy * side + ox) * co + o] = Math.max(0, s);
      }
  return y;
}

function denseRelu(
  x: Float32Array,
  w: { kernel: Float32Array; bias: Float32Array },
  inU: number,
  outU: number,
): Float32Array {
  const y = Float32Array.from(w.bias);
  for (let i = 0; i < inU; i++) {
    const xi = x[i];
    if (xi === 0) continue;
    const row = i * outU;
    for (let o = 0; o < outU; o++) y[o] += xi * w.kernel[row + o];
  }
  return y.map((v) => Math.max(0, v));
}

describe('VGG16 as ONNX (random weights)', () => {
  let weights: Vgg16Weights;
  const img = preprocess(syntheticRgb(1));
  const img2 = preprocess(syntheticRgb(2));
  beforeAll(async () => {
    weights = await randomWeights(1234);
    const r = rng(5); // Keras initialises biases to zero: make them non-zero so their layout is checked too
    for (const w of weights.values()) for (let i = 0; i < w.bias.length; i++) w.bias[i] = (r() - 0.5) * 0.2;
  });

  it('block1_conv1 equals the Keras conv (HWIO -> OIHW, NHWC in and out, batch 2)', async () => {
    const session = await createSession(vgg16Onnx(weights, 'block1_conv1'), { threads: 0 });
    try {
      const batch = new Float32Array(img.length * 2);
      batch.set(img);
      batch.set(img2, img.length);
      const out = await session.run({ input: await ortTensor(batch, [2, 224, 224, 3]) });
      const y = out.block1_conv1.data as Float32Array;
      expect(out.block1_conv1.dims).toEqual([2, 224, 224, 64]);
      const w = weights.get('block1_conv1')!;
      expect(relMaxDiff(y.subarray(0, 224 * 224 * 64), convRelu(img, 224, w, 3, 64))).toBeLessThan(1e-5);
      expect(relMaxDiff(y.subarray(224 * 224 * 64), convRelu(img2, 224, w, 3, 64))).toBeLessThan(1e-5);
    } finally {
      await session.release();
    }
  });

  it('fc2 equals Keras flatten (NHWC order) + fc1 + fc2 applied to block5_pool', async () => {
    const pool = await createSession(vgg16Onnx(weights, 'block5_pool'), { threads: 0 });
    let p: Float32Array;
    try {
      const out = await pool.run({ input: await ortTensor(img, [1, 224, 224, 3]) });
      expect(out.block5_pool.dims).toEqual([1, 7, 7, 512]);
      p = out.block5_pool.data as Float32Array;
    } finally {
      await pool.release();
    }
    const fc = await createSession(vgg16Onnx(weights, 'fc2'), { threads: 0 });
    try {
      const out = await fc.run({ input: await ortTensor(img, [1, 224, 224, 3]) });
      expect(out.fc2.dims).toEqual([1, 4096]);
      const fc1 = VGG16_LAYERS.find((l) => l.name === 'fc1')!;
      expect(fc1.kind).toBe('dense');
      const h = denseRelu(p, weights.get('fc1')!, 25088, 4096);
      const want = denseRelu(h, weights.get('fc2')!, 4096, 4096);
      const got = out.fc2.data as Float32Array;
      expect(want.some((v) => v > 0)).toBe(true);
      expect(relMaxDiff(got, want)).toBeLessThan(1e-4);
    } finally {
      await fc.release();
    }
  });

  it('refuses fc2 from no-top weights with a clear message', () => {
    const noTop: Vgg16Weights = new Map([...weights].filter(([k]) => !k.startsWith('fc') && k !== 'predictions'));
    expect(() => vgg16Onnx(noTop, 'fc2')).toThrow(/no layer fc1.*no-top/);
  });
});
