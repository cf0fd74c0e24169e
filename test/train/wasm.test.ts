// A training step on the wasm backend (with the project's kernel fixes) gives the same loss and
// gradients as the cpu backend, and leaves no tensors behind.
import { describe, it, expect, afterAll } from 'vitest';
import { tf } from '../../src/tf/tf.js';
import { initBackend } from '../../src/tf/backend.js';
import { makeBatch } from '../../src/model/decoders/batch.js';
import { MergeDecoder, type MergeSpec } from '../../src/model/decoders/merge.js';
import { Adam, byWeightName } from '../../src/train/adam.js';
import { rng } from '../../src/util/random.js';

const spec: MergeSpec = {
  vocabSize: 40,
  featureDim: 10,
  embedDim: 8,
  units: 12,
  imageUnits: 12,
  hiddenUnits: 16,
  merge: 'add',
  dropout: 0,
};

function batch() {
  const r = rng(3);
  const items = Array.from({ length: 6 }, () => ({
    features: Float32Array.from({ length: spec.featureDim }, () => r()),
    tokens: [2, ...Array.from({ length: 2 + Math.floor(r() * 6) }, () => 4 + Math.floor(r() * 36)), 3],
  }));
  return makeBatch(items, spec.featureDim);
}

async function stepOn(backend: 'cpu' | 'wasm') {
  await initBackend(backend, { quiet: true });
  const m = MergeDecoder.create(spec, 11);
  const adam = new Adam(m.weights, { learningRate: 0.01, clipNorm: 1 });
  try {
    const b = batch();
    const run = () => {
      const { value, grads } = tf.variableGrads(() => m.loss(b, { training: true, seed: 1 }), m.variables);
      const named = byWeightName(m.weights, grads);
      const g = Object.fromEntries(Object.entries(named).map(([k, t]) => [k, Float32Array.from(t.dataSync())]));
      adam.apply(named).dispose();
      const loss = value.dataSync()[0];
      tf.dispose([value, ...Object.values(grads)]);
      return { loss, g };
    };
    const first = run();
    const before = tf.memory().numTensors;
    const second = run();
    expect(tf.memory().numTensors).toBe(before);
    return { first, second };
  } finally {
    adam.dispose();
    m.dispose();
  }
}

afterAll(async () => {
  await tf.setBackend('cpu');
});

describe('training on wasm', () => {
  it('matches cpu loss and gradients', async () => {
    const c = await stepOn('cpu');
    const w = await stepOn('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(w.first.loss).toBeCloseTo(c.first.loss, 4);
    expect(w.second.loss).toBeCloseTo(c.second.loss, 4);
    expect(w.second.loss).toBeLessThan(w.first.loss);
    for (const k of Object.keys(c.first.g)) {
      const a = c.first.g[k];
      const b = w.first.g[k];
      let maxAbs = 0;
      let maxDiff = 0;
      for (let i = 0; i < a.length; i++) {
        maxAbs = Math.max(maxAbs, Math.abs(a[i]));
        maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
      }
      expect(maxDiff, k).toBeLessThanOrEqual(1e-4 * Math.max(1, maxAbs));
    }
  });
});
