// The step interface (src/train/trainer.ts) and data-parallel training (src/train/parallel): workers 1 (the
// main thread's variables and Adam.apply) and 2 or 3 workers agree to float tolerance, runs are byte-identical
// for the same seed and workers, the partitioned update equals the main-thread one, the optimizer checkpoint
// continues exactly, worker errors surface as errors (no hang), dispose ends the workers, and the main thread
// keeps no tensors. The workers run src/train/parallel/worker.ts (test/helpers/ts-hooks.mjs).
import { describe, it, expect, beforeAll } from 'vitest';
import { tf } from '../../src/tf/tf.js';
import { initBackend } from '../../src/tf/backend.js';
import { makeBatch, type CaptionBatch, type FeatureNorm } from '../../src/model/decoders/batch.js';
import {
  MergeDecoder,
  mergeInitialWeights as initialWeights,
  type MergeSpec as DecoderSpec,
} from '../../src/model/decoders/merge.js';
import { Adam, byWeightName } from '../../src/train/adam.js';
import {
  createParallelTrainer,
  resolveWorkers,
  type ParallelTrainerOptions,
} from '../../src/train/parallel/trainer.js';
import { createTrainer, type TrainerOptions } from '../../src/train/trainer.js';
import { splitBatch } from '../../src/train/parallel/split.js';
import { ConfigError, ModelError } from '../../src/errors.js';
import { availableParallelism } from 'node:os';
import { rng } from '../../src/util/random.js';
import { attentionKind } from '../../src/model/decoders/attention.js';

const spec: DecoderSpec = {
  vocabSize: 40,
  featureDim: 10,
  embedDim: 8,
  units: 12,
  imageUnits: 12,
  hiddenUnits: 16,
  merge: 'add',
  dropout: 0,
};
const norm: FeatureNorm = { mean: new Float32Array(10), std: new Float32Array(10).fill(1) };

function batch(seed: number, rows = 7): CaptionBatch {
  const r = rng(seed);
  const items = Array.from({ length: rows }, () => ({
    features: Float32Array.from({ length: spec.featureDim }, () => r()),
    tokens: [2, ...Array.from({ length: 1 + Math.floor(r() * 8) }, () => 4 + Math.floor(r() * 36)), 3],
  }));
  return makeBatch(items, spec.featureDim);
}

const opts = (workers: number, more: Partial<TrainerOptions> = {}): ParallelTrainerOptions => ({
  kind: 'merge',
  spec,
  weights: initialWeights(spec, 5),
  norm,
  workers,
  learningRate: 0.01,
  clipNorm: 1,
  ...more,
});

async function train(o: TrainerOptions, steps = 5) {
  const t = await createTrainer(o);
  try {
    const losses: number[] = [];
    const norms: number[] = [];
    const live: number[] = [];
    for (let s = 0; s < steps; s++) {
      const r = await t.step(batch(100 + s), 1000 + s);
      losses.push(r.loss);
      norms.push(r.norm);
      live.push(tf.memory().numTensors);
    }
    // a step leaves no tensors behind in the main thread (workers: 1 computes there)
    expect(new Set(live).size).toBe(1);
    return { weights: await t.readWeights(), losses, norms };
  } finally {
    await t.dispose();
  }
}

function maxDiff(a: Record<string, Float32Array>, b: Record<string, Float32Array>): number {
  let d = 0;
  for (const k of Object.keys(a)) for (let i = 0; i < a[k].length; i++) d = Math.max(d, Math.abs(a[k][i] - b[k][i]));
  return d;
}

const bytes = (w: Record<string, Float32Array>) =>
  Buffer.concat(Object.keys(w).map((k) => Buffer.from(w[k].buffer, w[k].byteOffset, w[k].byteLength)));

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
});

describe('splitBatch', () => {
  it('cuts rows into slices whose weights sum to 1 and keep every target', () => {
    const b = batch(1, 9);
    const s = splitBatch(b, 3, spec.featureDim);
    expect(s.length).toBe(3);
    expect(s.reduce((a, x) => a + x.weight, 0)).toBeCloseTo(1, 12);
    expect(s.reduce((a, x) => a + x.batch.size, 0)).toBe(9);
    expect(Array.from(s.flatMap((x) => Array.from(x.batch.targets)))).toEqual(Array.from(b.targets));
    // more workers than rows: only non-empty slices
    expect(splitBatch(batch(2, 2), 4, spec.featureDim).length).toBe(2);
  });
});

describe('resolveWorkers', () => {
  it('auto is one per core; other values must be positive integers', () => {
    expect(resolveWorkers('auto')).toBe(availableParallelism());
    expect(resolveWorkers(3)).toBe(3);
    expect(() => resolveWorkers(0)).toThrow(ConfigError);
    expect(() => resolveWorkers(1.5)).toThrow(/positive integer/);
  });
});

describe('parallel trainer', () => {
  it('workers: 1 trains on the main thread with Adam.apply: the bytes of the loop written out by hand', async () => {
    const before = tf.memory().numTensors;
    const got = await train(opts(1));
    expect(tf.memory().numTensors).toBe(before);
    const m = new MergeDecoder(spec, initialWeights(spec, 5), norm);
    const adam = new Adam(m.weights, { learningRate: 0.01, clipNorm: 1 });
    for (let s = 0; s < 5; s++) {
      const { value, grads } = tf.variableGrads(() => m.loss(batch(100 + s), { training: true }), m.variables);
      adam.apply(byWeightName(m.weights, grads)).dispose();
      tf.dispose([value, ...Object.values(grads)]);
    }
    const want = await m.readWeights();
    adam.dispose();
    m.dispose();
    expect(bytes(got.weights).equals(bytes(want))).toBe(true);
  });

  it('workers 1 and 2 give the same weights to float tolerance after 5 steps', async () => {
    const one = await train(opts(1));
    const two = await train(opts(2));
    expect(maxDiff(one.weights, two.weights)).toBeLessThan(1e-4);
    // Adam hides the gradient's scale: compare the summed gradient's norm (each slice weighted by its
    // share of the batch's targets) and the loss, step by step
    two.losses.forEach((l, i) => expect(l).toBeCloseTo(one.losses[i], 4));
    two.norms.forEach((g, i) => expect(g).toBeCloseTo(one.norms[i], 4));
    const three = await train(opts(3));
    expect(maxDiff(one.weights, three.weights)).toBeLessThan(1e-4);
  });

  it('label smoothing reaches the workers: workers 1 and 2 agree with it, and it changes the training', async () => {
    const one = await train(opts(1, { labelSmoothing: 0.2 }));
    const two = await train(opts(2, { labelSmoothing: 0.2 }));
    expect(maxDiff(one.weights, two.weights)).toBeLessThan(1e-4);
    two.losses.forEach((l, i) => expect(l).toBeCloseTo(one.losses[i], 4));
    const plain = await train(opts(2));
    expect(maxDiff(plain.weights, two.weights)).toBeGreaterThan(1e-4);
    expect(two.losses[0]).not.toBeCloseTo(plain.losses[0], 3); // the smoothed objective, not the plain one
  });

  it('same seed and workers 2 are byte-identical, with dropout, and the partitioned update gives the same bytes', async () => {
    const d = { ...spec, dropout: 0.3 };
    const a = await train(opts(2, { spec: d, update: 'main' }));
    const b = await train(opts(2, { spec: d, update: 'main' }));
    const c = await train(opts(2, { spec: d, update: 'partitioned' }));
    expect(bytes(a.weights).equals(bytes(b.weights))).toBe(true);
    expect(bytes(a.weights).equals(bytes(c.weights))).toBe(true);
  });

  it('the attention decoder (with its per-caption regulariser) trains the same on 1 and 2 workers', async () => {
    const aspec = {
      vocabSize: 40,
      positions: 4,
      channels: 6,
      embedDim: 8,
      units: 12,
      attentionDim: 8,
      dropout: 0,
      alphaReg: 1,
    };
    const anorm = { mean: new Float32Array(6), std: new Float32Array(6).fill(1) };
    const abatch = (seed: number) => {
      const b = batch(seed);
      const r = rng(seed + 1);
      return { ...b, images: Float32Array.from({ length: b.size * 24 }, () => r()) };
    };
    const run = async (workers: number) => {
      const t = await createTrainer({
        kind: 'attention',
        spec: aspec,
        weights: attentionKind.initialWeights(aspec, 3),
        norm: anorm,
        workers,
        learningRate: 0.01,
        clipNorm: 1,
      });
      try {
        const out: { loss: number; norm: number }[] = [];
        for (let s = 0; s < 4; s++) out.push(await t.step(abatch(200 + s), s));
        return { steps: out, weights: await t.readWeights() };
      } finally {
        await t.dispose();
      }
    };
    const one = await run(1);
    const two = await run(2);
    two.steps.forEach((s, i) => {
      expect(s.loss).toBeCloseTo(one.steps[i].loss, 4);
      expect(s.norm).toBeCloseTo(one.steps[i].norm, 4);
    });
    expect(maxDiff(one.weights, two.weights)).toBeLessThan(1e-4);
  });

  it('checkpoints the Adam moments: state/restore continues exactly', async () => {
    const full = await train(opts(2), 4);
    const t1 = await createTrainer(opts(2));
    for (let s = 0; s < 2; s++) await t1.step(batch(100 + s), 1000 + s);
    const st = await t1.state();
    const w = await t1.readWeights();
    await t1.dispose();
    const t2 = await createTrainer(opts(2, { weights: w }));
    t2.restore(st.iterations, st.learningRate, new Map(st.arrays.map((a) => [a.name, a])));
    for (let s = 2; s < 4; s++) await t2.step(batch(100 + s), 1000 + s);
    const got = await t2.readWeights();
    await t2.dispose();
    expect(bytes(got).equals(bytes(full.weights))).toBe(true);
  });

  it('one checkpoint format: workers 1 continues a workers-2 checkpoint, and workers 2 a workers-1 one', async () => {
    const full = await train(opts(1), 4);
    for (const [a, b] of [
      [2, 1],
      [1, 2],
    ]) {
      const t1 = await createTrainer(opts(a));
      for (let s = 0; s < 2; s++) await t1.step(batch(100 + s), 1000 + s);
      const st = await t1.state();
      const w = await t1.readWeights();
      expect(st.arrays.map((x) => x.name)).toEqual(Object.keys(w).flatMap((n) => [`m/${n}`, `v/${n}`]));
      await t1.dispose();
      const t2 = await createTrainer(opts(b, { weights: w }));
      t2.restore(st.iterations, st.learningRate, new Map(st.arrays.map((x) => [x.name, x])));
      expect(t2.iterations).toBe(2);
      for (let s = 2; s < 4; s++) await t2.step(batch(100 + s), 1000 + s);
      const got = await t2.readWeights();
      await t2.dispose();
      expect(maxDiff(got, full.weights), `workers ${a} then ${b}`).toBeLessThan(1e-4);
    }
  });

  it('workers 1 refuses a token outside the vocabulary; the parallel trainer needs 2 workers or more', async () => {
    const t = await createTrainer(opts(1));
    try {
      const bad = batch(3);
      bad.targets[0] = 99;
      await expect(t.step(bad, 1)).rejects.toThrow(/token 99 outside the vocabulary/);
      await t.step(batch(4), 1); // nothing was applied: the trainer goes on
      expect(t.iterations).toBe(1);
    } finally {
      await t.dispose();
    }
    await expect(createParallelTrainer(opts(1))).rejects.toBeInstanceOf(ConfigError);
  });

  it('a worker error rejects the step with the error (no hang), and later steps refuse', async () => {
    const t = await createParallelTrainer(opts(2));
    try {
      const bad = batch(3);
      bad.targets[bad.targets.length - 1] = 99; // outside the vocabulary, in the second worker's slice
      await expect(t.step(bad, 1)).rejects.toThrow(/token 99 outside the vocabulary/);
      await expect(t.step(batch(4), 1)).rejects.toBeInstanceOf(ModelError);
    } finally {
      await t.dispose();
    }
  });

  it('dispose during a step rejects that step instead of leaving it pending', async () => {
    const t = await createParallelTrainer(opts(2));
    // handle the rejection before it happens: the wasm backend's Node glue turns an unhandled
    // rejection into a crash of the process
    const settled = expect(t.step(batch(5), 1)).rejects.toThrow(/disposed during a step/);
    await t.dispose();
    await settled;
  });

  it('a worker that cannot build the model fails start-up with a ModelError', async () => {
    const broken = { ...spec, imageUnits: 7 }; // merge "add" needs imageUnits == units
    const p = createParallelTrainer(opts(2, { spec: broken, weights: initialWeights(broken, 1) }));
    await expect(p).rejects.toThrow(/merge "add"/);
    await expect(p).rejects.toBeInstanceOf(ModelError);
  });

  it('copyTo refreshes a main-thread model; no tensors are left in the main thread', async () => {
    const before = tf.memory().numTensors;
    const t = await createParallelTrainer(opts(2));
    const m = new MergeDecoder(spec, initialWeights(spec, 5), norm);
    try {
      const first = t.step(batch(9), 1);
      await expect(t.step(batch(9), 2)).rejects.toThrow(/another step is running/);
      await first;
      t.copyTo(m);
      expect(maxDiff(await m.readWeights(), await t.readWeights())).toBe(0);
    } finally {
      m.dispose();
      await t.dispose();
      await t.dispose(); // idempotent
    }
    expect(tf.memory().numTensors).toBe(before);
    await expect(t.step(batch(9), 1)).rejects.toThrow(/after dispose/);
  });
});
