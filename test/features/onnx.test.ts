// The hand-written ONNX protobuf writer and the VGG16 graph, checked by running them in onnxruntime
// against plain-JS arithmetic.
import { beforeAll, describe, expect, it } from 'vitest';
import { DataType, Message, floatTensor, model, node, valueInfo, varintLen, writeVarint } from '../../src/features/onnx/proto.js';
import { createSession, floatTensor as ortTensor } from '../../src/features/onnx/runtime.js';
import { vgg16Onnx } from '../../src/features/vgg16/onnx.js';
import { VGG16_LAYERS, type Vgg16Weights } from '../../src/features/vgg16/spec.js';
import { rng } from '../../src/util/random.js';
import { randomWeights, relMaxDiff, preprocess, syntheticRgb } from './helpers.js';

describe('protobuf writer', () => {
  it('encodes varints like protobuf (negative int64 as 10 bytes)', () => {
    const cases: [bigint, number[]][] = [
      [0n, [0]],
      [1n, [1]],
      [127n, [0x7f]],
      [128n, [0x80, 0x01]],
      [300n, [0xac, 0x02]],
      [-1n, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]],
    ];
    for (const [v, bytes] of cases) {
      const buf = new Uint8Array(12);
      const end = writeVarint(buf, 0, v);
      expect(Array.from(buf.slice(0, end))).toEqual(bytes);
      expect(varintLen(v)).toBe(bytes.length);
    }
  });
  it('measures exactly what it writes, nested messages included', () => {
    const inner = new Message().varint(1, 150).string(2, 'testing');
    const m = new Message().message(3, inner).float(4, 1.5).packed(5, [1, 300, -2]).bytes(6, new Uint8Array([9, 9]));
    const buf = m.encode();
    expect(buf.length).toBe(m.byteLength());
    // field 3, wire type 2, then length of the inner message, then field 1 varint 150 = 08 96 01
    expect(Array.from(buf.slice(0, 5))).toEqual([0x1a, inner.byteLength(), 0x08, 0x96, 0x01]);
  });
});

describe('a tiny ONNX model written by our writer', () => {
  it('runs in onnxruntime: 1x1 Conv + GlobalAveragePool + Flatten, dynamic batch', async () => {
    const r = rng(7);
    const W = Float32Array.from({ length: 4 * 3 }, () => r() - 0.5); // [4, 3, 1, 1]
    const B = Float32Array.from({ length: 4 }, () => r() - 0.5);
    const bytes = model({
      name: 'tiny',
      nodes: [
        node('Conv', ['x', 'W', 'B'], ['c'], 'conv', { kernel_shape: [1, 1] }),
        node('GlobalAveragePool', ['c'], ['g'], 'gap'),
        node('Flatten', ['g'], ['y'], 'flat', { axis: 1 }),
      ],
      initializers: [floatTensor('W', [4, 3, 1, 1], W), floatTensor('B', [4], B)],
      inputs: [valueInfo('x', DataType.FLOAT, ['N', 3, 5, 6])],
      outputs: [valueInfo('y', DataType.FLOAT, ['N', 4])],
    }).encode();
    const session = await createSession(bytes, { threads: 1 });
    try {
      const n = 3;
      const x = Float32Array.from({ length: n * 3 * 30 }, () => r() * 2 - 1);
      const out = await session.run({ x: await ortTensor(x, [n, 3, 5, 6]) });
      const y = out.y.data as Float32Array;
      expect(out.y.dims).toEqual([n, 4]);
      for (let b = 0; b < n; b++)
        for (let o = 0; o < 4; o++) {
          let s = 0;
          for (let p = 0; p < 30; p++) {
            let v = B[o];
            for (let c = 0; c < 3; c++) v += W[o * 3 + c] * x[(b * 3 + c) * 30 + p];
            s += v;
          }
          expect(y[b * 4 + o]).toBeCloseTo(s / 30, 5);
        }
    } finally {
      await session.release();
    }
  });
});

/** Plain-JS Keras conv 3x3 same + relu, NHWC in/out, HWIO kernel. */
function convRelu(x: Float32Array, side: number, w: { kernel: Float32Array; bias: Float32Array }, ci: number, co: number): Float32Array {
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
            for (let c = 0; c < ci; c++) s += x[(iy * side + ix) * ci + c] * w.kernel[((ky * 3 + kx) * ci + c) * co + o];
          }
        y[(oy * side + ox) * co + o] = Math.max(0, s);
      }
  return y;
}

function denseRelu(x: Float32Array, w: { kernel: Float32Array; bias: Float32Array }, inU: number, outU: number): Float32Array {
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
  }, 60_000);

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
  }, 60_000);

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
  }, 120_000);

  it('refuses fc2 from no-top weights with a clear message', () => {
    const noTop: Vgg16Weights = new Map([...weights].filter(([k]) => !k.startsWith('fc') && k !== 'predictions'));
    expect(() => vgg16Onnx(noTop, 'fc2')).toThrow(/no layer fc1.*no-top/);
  });
});
