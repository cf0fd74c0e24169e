// The wasm kernel overrides (src/tf/kernels/) give the cpu backend's answers: matmuls with every
// transpose combination and batch dims and the fused matmul, both as installed (by OpenBLAS where the addon
// loads) and on wasm's own kernels (the 'wasm' route: what runs without the addon), UnsortedSegmentSum,
// Slice / Unpack / SplitV, and the Embedding (gather) gradient; nothing leaks tensors.
import { beforeAll, describe, expect, it } from 'vitest';
import { routes } from '../helpers/wasm-kernels.js';
import type { Route } from '../helpers/kernel-routes.js';
import { tf } from '../../src/tf/tf.js';
import { initBackend } from '../../src/tf/backend.js';
import { chooseSwapped } from '../../src/tf/kernels/untransposed.js';
import { rng } from '../../src/util/random.js';
import { expectClose, randArray, size } from '../helpers/arrays.js';

const cpu = () => initBackend('cpu', { quiet: true });
const wasm = () => initBackend('wasm', { quiet: true });

/** Run f on both backends with the same inputs (wasm by `route`); returns [cpu result, wasm result] as arrays. */
async function onBoth(f: () => tf.Tensor, route: Route = 'addon'): Promise<[Float32Array, Float32Array]> {
  await cpu();
  const c = tf.tidy(f).dataSync() as Float32Array;
  await wasm();
  const before = tf.memory().numTensors;
  const w = routes.withRoute(route, () => {
    const out = tf.tidy(f);
    const values = Float32Array.from(out.dataSync() as Float32Array);
    out.dispose();
    return values;
  });
  expect(tf.memory().numTensors).toBe(before);
  return [Float32Array.from(c), w];
}

/** The routes a product is checked on: as installed, and on wasm's own kernels. */
const ROUTES: Route[] = ['addon', 'wasm'];

beforeAll(async () => {
  await wasm();
});

describe('wasm BatchMatMul / _FusedMatMul patches', () => {
  const r = rng(7);
  const cases: { batchA: number[]; batchB: number[]; M: number; K: number; N: number }[] = [
    { batchA: [], batchB: [], M: 5, K: 7, N: 3 },
    { batchA: [], batchB: [], M: 2, K: 50, N: 40 },
    { batchA: [], batchB: [], M: 40, K: 50, N: 2 },
    { batchA: [], batchB: [], M: 33, K: 64, N: 129 },
    { batchA: [3], batchB: [3], M: 4, K: 6, N: 5 },
    { batchA: [2, 3], batchB: [2, 3], M: 3, K: 9, N: 17 },
    { batchA: [3], batchB: [1], M: 4, K: 6, N: 5 },
    { batchA: [1], batchB: [3], M: 1, K: 20, N: 8 },
    // large enough for the batched fast paths (fold when B's batch is 1, else per-batch views)
    { batchA: [3], batchB: [3], M: 20, K: 30, N: 40 },
    { batchA: [2, 3], batchB: [2, 3], M: 17, K: 33, N: 41 },
    { batchA: [4], batchB: [1], M: 20, K: 30, N: 40 },
    { batchA: [4], batchB: [], M: 20, K: 30, N: 40 },
    { batchA: [1], batchB: [4], M: 20, K: 30, N: 40 },
  ];
  const seen = new Set<boolean>();
  for (const c of cases) {
    for (const tA of [false, true]) {
      for (const tB of [false, true]) {
        it(`matMul batch [${c.batchA}]x[${c.batchB}] M${c.M} K${c.K} N${c.N} tA=${tA} tB=${tB}`, async () => {
          const aShape = [...c.batchA, ...(tA ? [c.K, c.M] : [c.M, c.K])];
          const bShape = [...c.batchB, ...(tB ? [c.N, c.K] : [c.K, c.N])];
          if (tA || tB) seen.add(chooseSwapped(aShape, bShape, tA, tB));
          const av = randArray(r, size(aShape));
          const bv = randArray(r, size(bShape));
          for (const route of ROUTES) {
            const [x, y] = await onBoth(() => tf.matMul(tf.tensor(av, aShape), tf.tensor(bv, bShape), tA, tB), route);
            expectClose(x, y);
          }
        });
      }
    }
  }
  it('batched products leave no tensors or backend data behind', async () => {
    await wasm();
    const a = tf.randomNormal([5, 40, 30]);
    const b = tf.randomNormal([5, 30, 50]);
    const w = tf.randomNormal([30, 50]);
    const bt = tf.randomNormal([5, 50, 40]);
    const backend = tf.backend() as unknown as { numDataIds(): number };
    const before = [tf.memory().numTensors, backend.numDataIds()];
    for (const route of ROUTES) {
      routes.withRoute(route, () => {
        for (let i = 0; i < 20; i++) {
          tf.tidy(() => tf.matMul(a, b).dataSync());
          tf.tidy(() => tf.matMul(a, bt, true, true).dataSync().length + tf.matMul(a, w).dataSync().length);
        }
      });
      expect([tf.memory().numTensors, backend.numDataIds()]).toEqual(before);
    }
    tf.dispose([a, b, w, bt]);
  });

  it('exercised both the explicit and the swapped strategy', () => {
    expect([...seen].sort()).toEqual([false, true]);
  });

  for (const [tA, tB] of [
    [false, false],
    [true, false],
    [false, true],
    [true, true],
  ] as const) {
    it(`fused matMul with bias + relu, tA=${tA} tB=${tB}`, async () => {
      const M = 6,
        K = 11,
        N = 9;
      const av = randArray(r, M * K);
      const bv = randArray(r, K * N);
      const biasV = randArray(r, N);
      for (const route of ROUTES) {
        const [x, y] = await onBoth(
          () =>
            tf.fused.matMul({
              a: tf.tensor(av, tA ? [K, M] : [M, K]),
              b: tf.tensor(bv, tB ? [N, K] : [K, N]),
              transposeA: tA,
              transposeB: tB,
              bias: tf.tensor1d(biasV),
              activation: 'relu',
            }),
          route,
        );
        expectClose(x, y);
      }
    });
  }

  it('matches cpu on a training-sized transposed product (dense weight gradient)', async () => {
    const a = randArray(r, 300 * 64);
    const b = randArray(r, 300 * 500);
    for (const route of ROUTES) {
      const [x, y] = await onBoth(
        () => tf.matMul(tf.tensor2d(a, [300, 64]), tf.tensor2d(b, [300, 500]), true, false),
        route,
      );
      expectClose(x, y, 1e-4);
    }
  });
});

describe('wasm UnsortedSegmentSum', () => {
  const r = rng(11);
  it('is registered on wasm', () => {
    expect(tf.getKernel('UnsortedSegmentSum', 'wasm')).toBeDefined();
  });
  for (const [n, inner, segs] of [
    [10, [4], 6],
    [50, [3, 5], 7],
    [1, [8], 1],
    [0, [4], 3],
  ] as const) {
    it(`matches cpu: x [${n}, ${inner}], ${segs} segments`, async () => {
      const xs = randArray(r, n * size([...inner]));
      const ids = Int32Array.from({ length: n }, () => Math.floor(r() * segs));
      const [x, y] = await onBoth(() =>
        tf.unsortedSegmentSum(tf.tensor(xs, [n, ...inner]), tf.tensor1d(ids, 'int32'), segs),
      );
      expectClose(x, y, 1e-6);
    });
  }
  it('sums int32 and drops out-of-range ids', async () => {
    await wasm();
    const out = tf.tidy(() =>
      tf.unsortedSegmentSum(
        tf.tensor2d([1, 2, 3, 4, 5, 6, 7, 8], [4, 2], 'int32'),
        tf.tensor1d([1, -1, 1, 5], 'int32'),
        3,
      ),
    );
    expect(out.dtype).toBe('int32');
    expect(Array.from(out.dataSync())).toEqual([0, 0, 6, 8, 0, 0]);
    out.dispose();
  });
});

describe('training through gather (Embedding) on wasm', () => {
  const r = rng(3);
  const V = 30,
    D = 8,
    B = 4,
    L = 6;
  const table = randArray(r, V * D);
  const ids = Int32Array.from({ length: B * L }, () => Math.floor(r() * V));
  const w = randArray(r, D * 5);

  it('gather gradient equals cpu and leaks nothing', async () => {
    const grad = () =>
      tf.tidy(() => {
        const g = tf.grad((p: tf.Tensor) =>
          tf
            .matMul(tf.gather(p, tf.tensor2d(ids, [B, L], 'int32')).reshape([B * L, D]), tf.tensor2d(w, [D, 5]))
            .square()
            .sum(),
        );
        return g(tf.tensor2d(table, [V, D]));
      });
    const [x, y] = await onBoth(grad);
    expectClose(x, y, 1e-4);
  });

  it('an Embedding + LSTM + Dense model trains on wasm like on cpu', async () => {
    const run = async (backend: 'cpu' | 'wasm') => {
      await initBackend(backend, { quiet: true });
      tf.engine().startScope();
      try {
        const model = tf.sequential({
          layers: [
            tf.layers.embedding({
              inputDim: V,
              outputDim: D,
              inputLength: L,
              maskZero: true,
              embeddingsInitializer: tf.initializers.randomUniform({ minval: -0.1, maxval: 0.1, seed: 1 }),
            }),
            tf.layers.lstm({
              units: 7,
              kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }),
              recurrentInitializer: tf.initializers.glorotUniform({ seed: 3 }),
            }),
            tf.layers.dense({ units: 3, kernelInitializer: tf.initializers.glorotUniform({ seed: 4 }) }),
          ],
        });
        const xs = tf.tensor2d(ids, [B, L], 'int32');
        const ys = tf.oneHot(tf.tensor1d([0, 1, 2, 1], 'int32'), 3);
        const opt = tf.train.adam(0.05);
        const losses: number[] = [];
        let afterFirst = -1; // optimizer slots exist after the first step; later steps add nothing
        for (let i = 0; i < 5; i++) {
          const loss = opt.minimize(
            () => tf.losses.softmaxCrossEntropy(ys, model.apply(xs) as tf.Tensor) as tf.Scalar,
            true,
          )!;
          losses.push(loss.dataSync()[0]);
          loss.dispose();
          if (i === 0) afterFirst = tf.memory().numTensors;
          else expect(tf.memory().numTensors).toBe(afterFirst);
        }
        const weights = Float32Array.from(model.getWeights()[0].dataSync());
        return { losses, weights };
      } finally {
        tf.engine().endScope();
      }
    };
    const c = await run('cpu');
    const w = await run('wasm');
    expect(w.losses[4]).toBeLessThan(w.losses[0]);
    expectClose(c.losses, w.losses, 1e-4);
    expectClose(c.weights, w.weights, 1e-4);
  });
});

describe('wasm Slice / Unpack / SplitV (heap views)', () => {
  const r = rng(21);
  const shapes = [[7], [5, 6], [3, 4, 5], [2, 3, 4, 5], [2, 2, 3, 2, 3]];
  for (const shape of shapes) {
    it(`slice, unstack and split of [${shape}] match cpu`, async () => {
      const vals = randArray(r, size(shape));
      for (let trial = 0; trial < 4; trial++) {
        const begin = shape.map((d) => Math.floor(r() * d));
        const sz = shape.map((d, i) => (r() < 0.3 ? -1 : 1 + Math.floor(r() * (d - begin[i]))));
        const [x, y] = await onBoth(() => tf.slice(tf.tensor(vals, shape), begin, sz));
        expectClose(x, y, 1e-7);
      }
      for (let axis = 0; axis < shape.length; axis++) {
        const [x, y] = await onBoth(() =>
          tf.stack(
            tf.unstack(tf.tensor(vals, shape), axis).map((t) => t.add(1)),
            0,
          ),
        );
        expectClose(x, y, 1e-7);
        const d = shape[axis];
        const parts = d >= 3 ? [1, -1, 1] : d === 2 ? [1, 1] : [1];
        const [p, q] = await onBoth(() =>
          tf.concat(
            tf.split(tf.tensor(vals, shape), parts, axis).map((t) => t.mul(2).reshape([-1])),
            0,
          ),
        );
        expectClose(p, q, 1e-7);
      }
    });
  }
  it('keeps int32 and bool dtypes and handles empty slices', async () => {
    await wasm();
    const t = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3], 'int32');
    const s = tf.slice(t, [0, 1], [2, 2]);
    expect(s.dtype).toBe('int32');
    expect(Array.from(s.dataSync())).toEqual([2, 3, 5, 6]);
    const b = tf.slice(tf.tensor1d([1, 0, 1], 'bool'), [1], [2]);
    expect(Array.from(b.dataSync())).toEqual([0, 1]);
    expect(tf.slice(t, [0, 0], [0, 3]).shape).toEqual([0, 3]);
    tf.dispose([t, s, b]);
  });
});

describe('wasm Identity shares the buffer (autograd saves every forward tensor through it)', () => {
  it('a clone costs no memory, outlives its source, and gradients through saved tensors stay right', async () => {
    await wasm();
    const x = tf.tensor2d([1, 2, 3, 4], [2, 2]);
    const y = tf.clone(x);
    expect(y.dataId).toBe(x.dataId); // the same buffer, reference counted
    x.dispose();
    expect([...(await y.data())]).toEqual([1, 2, 3, 4]);
    y.dispose();
    const s = tf.tensor1d(['a', 'b']);
    const sc = tf.clone(s);
    s.dispose();
    expect(await sc.data()).toEqual(['a', 'b']);
    sc.dispose();
    // sigmoid and tanh save their outputs for the backward pass: the gradient must still be right
    const before = tf.memory().numTensors;
    const v = tf.tensor1d([0.5, -1, 2]);
    const g = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.sigmoid(a), tf.tanh(a))))(v);
    const got = await g.data();
    const expected = [0.5, -1, 2].map((a) => {
      const s1 = 1 / (1 + Math.exp(-a));
      const t = Math.tanh(a);
      return s1 * (1 - s1) * t + s1 * (1 - t * t);
    });
    for (let i = 0; i < 3; i++) expect(got[i]).toBeCloseTo(expected[i], 5);
    tf.dispose([v, g]);
    expect(tf.memory().numTensors).toBe(before);
  });
});
