// The decoder's custom-gradient building blocks (src/model/ops.ts): lstmSequence's hand-written backward
// pass gives autograd's gradients through T lstmCell steps, lstmCellGrad is lstmCell's derivative, and
// chunkRows splits rows into even chunks within the budget, and softmaxCrossEntropy's label smoothing gives
// autograd's value and gradients of the smoothed loss written out. On the cpu backend (the tfjs-ops path every
// backend can run) and on wasm (with the native addon's cell kernels where it loads).
import { afterAll, describe, expect, it } from 'vitest';
import { tf } from '../../src/tf/tf.js';
import { initBackend } from '../../src/tf/backend.js';
import { chunkRows, lstmCell, lstmCellGrad, lstmSequence, softmaxCrossEntropy } from '../../src/model/ops.js';
import { rng } from '../../src/util/random.js';
import { expectClose, randArray } from '../helpers/arrays.js';

const B = 3;
const T = 4;
const E = 5;
const U = 6;

function inputs(seed: number): Float32Array[] {
  const r = rng(seed);
  return [
    randArray(r, B * T * E).map((v) => v * 2),
    randArray(r, E * 4 * U),
    randArray(r, U * 4 * U),
    randArray(r, 4 * U),
    randArray(r, B * T * U),
  ];
}

/** The loss sum(h * weights) through lstmSequence, or through T autograd lstmCell steps; value and grads. */
function valueAndGrads(seed: number, fused: boolean): Float32Array[] {
  const [x, k, r, b, wy] = inputs(seed);
  return tf.tidy(() => {
    const vars = [tf.tensor2d(x, [B * T, E]), tf.tensor2d(k, [E, 4 * U]), tf.tensor2d(r, [U, 4 * U]), tf.tensor1d(b)];
    const weights = tf.tensor2d(wy, [B * T, U]);
    const loss = (xx: tf.Tensor, kk: tf.Tensor, rr: tf.Tensor, bb: tf.Tensor) => {
      let h: tf.Tensor2D;
      if (fused) {
        h = lstmSequence(xx as tf.Tensor2D, kk as tf.Tensor2D, rr as tf.Tensor2D, bb as tf.Tensor1D, B, T);
      } else {
        const zs = tf.unstack(
          tf.reshape(tf.add(tf.matMul(xx as tf.Tensor2D, kk as tf.Tensor2D), bb), [B, T, 4 * U]),
          1,
        ) as tf.Tensor2D[];
        let hh = tf.zeros([B, U]) as tf.Tensor2D;
        let c = tf.zeros([B, U]) as tf.Tensor2D;
        const hs: tf.Tensor2D[] = [];
        for (let t = 0; t < T; t++) {
          [hh, c] = lstmCell(zs[t], tf.matMul(hh, rr as tf.Tensor2D), c);
          hs.push(hh);
        }
        h = tf.reshape(tf.stack(hs, 1), [B * T, U]) as tf.Tensor2D;
      }
      return tf.sum(tf.mul(h, weights)) as tf.Scalar;
    };
    const { value, grads } = tf.valueAndGrads(loss)(vars);
    return [value, ...grads].map((t) => Float32Array.from(t.dataSync() as Float32Array));
  });
}

afterAll(async () => {
  await initBackend('wasm', { quiet: true });
});

describe.each(['cpu', 'wasm'] as const)('on the %s backend', (backend) => {
  it("lstmSequence gives autograd's loss and gradients through T cell steps, and leaks nothing", async () => {
    await initBackend(backend, { quiet: true });
    for (const seed of [1, 2]) {
      const before = tf.memory().numTensors;
      const fused = valueAndGrads(seed, true);
      const steps = valueAndGrads(seed, false);
      expect(tf.memory().numTensors).toBe(before);
      expect(fused).toHaveLength(5);
      for (let i = 0; i < fused.length; i++) expectClose(fused[i], steps[i], 1e-5);
      expect(fused[1].some((v) => v !== 0)).toBe(true);
    }
    // no sequences, or sequences of no steps: an empty output, not a failure inside tf.stack
    for (const [b, t] of [
      [0, 3],
      [2, 0],
    ]) {
      const shape = tf.tidy(
        () => lstmSequence(tf.zeros([0, E]), tf.zeros([E, 4 * U]), tf.zeros([U, 4 * U]), tf.zeros([4 * U]), b, t).shape,
      );
      expect(shape).toEqual([0, U]);
    }
  });

  it('lstmCellGrad is the derivative of lstmCell (against autograd of the tfjs ops)', async () => {
    await initBackend(backend, { quiet: true });
    const r = rng(7);
    const N = 4;
    const zx = tf.tensor2d(
      randArray(r, N * 4 * U).map((v) => v * 4),
      [N, 4 * U],
    );
    const rec = tf.tensor2d(randArray(r, N * 4 * U), [N, 4 * U]);
    const c = tf.tensor2d(randArray(r, N * U), [N, U]);
    const dh = tf.tensor2d(randArray(r, N * U), [N, U]);
    const dc2 = tf.tensor2d(randArray(r, N * U), [N, U]);
    try {
      const [, c2] = lstmCell(zx, rec, c);
      const [dz, dc] = lstmCellGrad(zx, rec, c, c2, dh, dc2);
      const g = tf.grads((a: tf.Tensor, b: tf.Tensor, cc: tf.Tensor) => {
        const [h, c3] = lstmCell(a as tf.Tensor2D, b as tf.Tensor2D, cc as tf.Tensor2D);
        return tf.add(tf.sum(tf.mul(h, dh)), tf.sum(tf.mul(c3, dc2))) as tf.Scalar;
      })([zx, rec, c]);
      expectClose(dz.dataSync(), g[0].dataSync(), 1e-5);
      expectClose(dz.dataSync(), g[1].dataSync(), 1e-5);
      expectClose(dc.dataSync(), g[2].dataSync(), 1e-5);
      tf.dispose([c2, dz, dc, ...g]);
    } finally {
      tf.dispose([zx, rec, c, dh, dc2]);
    }
  });
});

/** The smoothed cross-entropy written out with tfjs ops: mean over rows of -sum_j q_j log softmax_j, q = (1 - e) onehot + e / V. */
function smoothedReference(h: tf.Tensor, w: tf.Tensor, b: tf.Tensor, targets: Int32Array, e: number): tf.Scalar {
  const V = w.shape[1] as number;
  const logp = tf.logSoftmax(tf.add(tf.matMul(h as tf.Tensor2D, w as tf.Tensor2D), b)); // [N, V]
  const q = tf.add(tf.mul(tf.oneHot(tf.tensor1d(targets, 'int32'), V), 1 - e), e / V); // [N, V]
  return tf.neg(tf.mean(tf.sum(tf.mul(q, logp), 1))) as tf.Scalar;
}

describe.each(['cpu', 'wasm'] as const)('label smoothing on the %s backend', (backend) => {
  it("gives autograd's value and gradients of the smoothed loss, chunked or not; validation (no grad) stays plain", async () => {
    await initBackend(backend, { quiet: true });
    const r = rng(21);
    const N = 13;
    const H = 7;
    const V = 11;
    const h = tf.tensor2d(randArray(r, N * H), [N, H]);
    const w = tf.tensor2d(randArray(r, H * V), [H, V]);
    const b = tf.tensor1d(randArray(r, V));
    const targets = Int32Array.from({ length: N }, () => Math.floor(r() * V));
    try {
      for (const e of [0, 0.1, 0.3]) {
        const ref = tf.valueAndGrads((hh: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) =>
          smoothedReference(hh, ww, bb, targets, e),
        )([h, w, b]);
        for (const budget of [4 * V, undefined]) {
          const before = tf.memory().numTensors;
          const ours = tf.valueAndGrads((hh: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) =>
            softmaxCrossEntropy(hh as tf.Tensor2D, ww as tf.Tensor2D, bb as tf.Tensor1D, targets, true, budget, e),
          )([h, w, b]);
          expect(ours.value.dataSync()[0]).toBeCloseTo(ref.value.dataSync()[0], 5);
          for (let i = 0; i < 3; i++) expectClose(ours.grads[i].dataSync(), ref.grads[i].dataSync(), 1e-5);
          tf.dispose([ours.value, ...ours.grads]);
          expect(tf.memory().numTensors).toBe(before);
        }
        tf.dispose([ref.value, ...ref.grads]);
      }
      // without the gradient (validation) the loss is the plain cross-entropy whatever the smoothing
      const plain = tf.tidy(() => softmaxCrossEntropy(h, w, b, targets, false, undefined, 0).dataSync()[0]);
      const smoothedVal = tf.tidy(() => softmaxCrossEntropy(h, w, b, targets, false, undefined, 0.3).dataSync()[0]);
      expect(smoothedVal).toBe(plain);
      const withSmoothing = tf.tidy(() => smoothedReference(h, w, b, targets, 0.3).dataSync()[0]);
      expect(Math.abs(withSmoothing - plain)).toBeGreaterThan(1e-3);
      expect(() => tf.tidy(() => softmaxCrossEntropy(h, w, b, targets, true, undefined, 1))).toThrow(/\[0, 1\)/);
    } finally {
      tf.dispose([h, w, b]);
    }
  });
});

describe('chunkRows', () => {
  it('keeps every chunk within the budget and makes them even', () => {
    expect(chunkRows(2112, 8000)).toBe(1056); // 64 MB budget: two chunks, not 2,097 + 15
    expect(chunkRows(2112, 8000, 1 << 23)).toBe(704); // 1,048 at most: three of 704
    expect(chunkRows(10, 8000, 1)).toBe(1); // never zero rows
    expect(chunkRows(5, 10)).toBe(5); // one chunk when it all fits
    for (const [n, v, budget] of [
      [2176, 8000, 1 << 23],
      [999, 37, 1000],
      [1, 1, 1],
    ]) {
      const step = chunkRows(n, v, budget);
      expect(step * v <= Math.max(budget, v)).toBe(true);
      const chunks = Math.ceil(n / step);
      expect(n - (chunks - 1) * step).toBeGreaterThan(step - chunks); // the last chunk is not a thin tail
    }
  });
});
