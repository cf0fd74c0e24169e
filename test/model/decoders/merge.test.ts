// The decoder: whole-caption teacher forcing agrees with the one-step (prefix) decoder, the fused loss
// gradient matches plain autodiff, and memory stays flat.
import { describe, it, expect, beforeAll } from 'vitest';
import { tf } from '../../../src/tf/tf.js';
import { MergeDecoder, type MergeSpec } from '../../../src/model/decoders/merge.js';
import { makeBatch, computeFeatureNorm } from '../../../src/model/decoders/batch.js';
import type { DecoderState } from '../../../src/model/decoders/types.js';
import { disposeState, gatherState } from '../../../src/model/decoders/state.js';
import { softmaxCrossEntropy } from '../../../src/model/ops.js';
import { rng } from '../../../src/util/random.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

function spec(merge: 'add' | 'concat'): MergeSpec {
  return {
    vocabSize: 13,
    featureDim: 6,
    embedDim: 5,
    units: 7,
    imageUnits: merge === 'add' ? 7 : 4,
    hiddenUnits: 9,
    merge,
    dropout: 0.3,
  };
}

function randomItems(n: number, s: MergeSpec, seed: number) {
  const r = rng(seed);
  return Array.from({ length: n }, () => {
    const len = 3 + Math.floor(r() * 5);
    const tokens = [2, ...Array.from({ length: len - 2 }, () => 4 + Math.floor(r() * (s.vocabSize - 4))), 3];
    const features = Float32Array.from({ length: s.featureDim }, () => r() * 0.01);
    return { features, tokens };
  });
}

describe('MergeDecoder', () => {
  for (const merge of ['add', 'concat'] as const) {
    it(`teacher-forced distributions equal the one-step decoder over each prefix (${merge})`, () => {
      const s = spec(merge);
      const items = randomItems(4, s, 7);
      const norm = computeFeatureNorm(
        items.map((i) => i.features),
        s.featureDim,
      );
      const m = MergeDecoder.create(s, 3, norm);
      try {
        const batch = makeBatch(items, s.featureDim);
        const all = m.logProbsAll(batch);
        const allV = all.arraySync();
        all.dispose();
        let state: DecoderState = m.initState(items.map((i) => i.features));
        for (let t = 0; t < batch.steps; t++) {
          const toks = items.map((it) => (t < it.tokens.length ? it.tokens[t] : 0));
          const out = m.step(state, toks);
          disposeState(state);
          state = out.state;
          const lp = out.logProbs.arraySync();
          out.logProbs.dispose();
          items.forEach((it, b) => {
            if (t >= it.tokens.length - 1) return; // past this caption's end
            for (let v = 0; v < s.vocabSize; v++) expect(lp[b][v]).toBeCloseTo(allV[b][t][v], 5);
          });
        }
        disposeState(state);
      } finally {
        m.dispose();
      }
    });
  }

  it('fused loss gradient equals autodiff of the plain cross-entropy', () => {
    const r = rng(5);
    const N = 11,
      H = 6,
      V = 9;
    const h = tf.tensor2d(
      Float32Array.from({ length: N * H }, () => r() - 0.5),
      [N, H],
    );
    const w = tf.variable(
      tf.tensor2d(
        Float32Array.from({ length: H * V }, () => r() - 0.5),
        [H, V],
      ),
    );
    const b = tf.variable(tf.tensor1d(Float32Array.from({ length: V }, () => r() - 0.5)));
    const targets = Int32Array.from({ length: N }, () => Math.floor(r() * V));
    const plain = tf.grads((hh: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) =>
      tf.losses.softmaxCrossEntropy(
        tf.oneHot(tf.tensor1d(targets, 'int32'), V),
        tf.add(tf.matMul(hh as tf.Tensor2D, ww as tf.Tensor2D), bb),
      ),
    );
    const g2 = plain([h, w, b]);
    for (const budget of [4 * V, undefined]) {
      // chunks of 4, 4 and 3 rows; one chunk
      const fused = tf.grads((hh: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) =>
        softmaxCrossEntropy(hh as tf.Tensor2D, ww as tf.Tensor2D, bb as tf.Tensor1D, targets, true, budget),
      );
      const g1 = fused([h, w, b]);
      for (let i = 0; i < 3; i++) {
        const a = g1[i].dataSync();
        const c = g2[i].dataSync();
        for (let k = 0; k < a.length; k++) expect(a[k]).toBeCloseTo(c[k], 5);
      }
      tf.dispose(g1);
    }
    const l1 = softmaxCrossEntropy(h, w, b, targets, false, 3 * V);
    const l2 = tf.losses.softmaxCrossEntropy(tf.oneHot(tf.tensor1d(targets, 'int32'), V), tf.add(tf.matMul(h, w), b));
    expect(l1.dataSync()[0]).toBeCloseTo(l2.dataSync()[0], 5);
    tf.dispose([h, w, b, l1, l2, ...g2]);
  });

  it('a training step leaves the tensor count unchanged', () => {
    const s = spec('add');
    const items = randomItems(5, s, 9);
    const m = MergeDecoder.create(s, 1);
    try {
      const batch = makeBatch(items, s.featureDim);
      const step = () => {
        const { value, grads } = tf.variableGrads(() => m.loss(batch, { training: true, seed: 3 }), m.variables);
        expect(Object.keys(grads)).toHaveLength(m.variables.length);
        tf.dispose([value, ...Object.values(grads)]);
      };
      step();
      const before = tf.memory().numTensors;
      for (let i = 0; i < 3; i++) step();
      expect(tf.memory().numTensors).toBe(before);
      const st = m.initState(items.map((i) => i.features));
      const out = m.step(st, [2, 2, 2, 2, 2]);
      const g = gatherState(out.state, [4, 0, 0]);
      expect(g.h.shape).toEqual([3, s.units]);
      disposeState(st);
      disposeState(out.state);
      disposeState(g);
      out.logProbs.dispose();
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      m.dispose();
    }
  });
});

describe('computeFeatureNorm', () => {
  it('gives the mean and std of each dimension', () => {
    const norm = computeFeatureNorm([new Float32Array([0, 1]), new Float32Array([2, 3])], 2);
    expect([...norm.mean]).toEqual([1, 2]);
    expect([...norm.std]).toEqual([1, 1]);
  });

  it('floors the std of sparse and constant dimensions at the mean std, so unseen activations stay sane', () => {
    // dim 0: dense, std 1e-3; dim 1: active in 1 of 100 training images; dim 2: always 0
    const vectors = Array.from({ length: 100 }, (_, i) => new Float32Array([(i % 2) * 2e-3, i === 0 ? 1e-4 : 0, 0]));
    const norm = computeFeatureNorm(vectors, 3);
    const floor = (1e-3 + Math.sqrt(1e-8 / 100 - (1e-6 / 100) ** 2)) / 3;
    expect(norm.std[0]).toBeCloseTo(1e-3, 8);
    // inputs are float32, so compare relatively
    expect(Math.abs(norm.std[1] / floor - 1)).toBeLessThan(1e-4);
    expect(Math.abs(norm.std[2] / floor - 1)).toBeLessThan(1e-4);
    // an unseen image activating the sparse unit as much as the dense one varies: z stays moderate
    const z = (2e-3 - norm.mean[1]) / norm.std[1];
    expect(z).toBeLessThan(10);
    expect(Number.isFinite(1 / norm.std[2])).toBe(true);
  });

  it('uses 1 when every dimension is constant', () => {
    const norm = computeFeatureNorm([new Float32Array([5, 5]), new Float32Array([5, 5])], 2);
    expect([...norm.std]).toEqual([1, 1]);
  });
});
