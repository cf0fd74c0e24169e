// Sampling and greedy drawing for SCST (src/decode/sample.ts) on wasm: first tokens follow the model's
// softmax (chi-square, fixed seed), a seed repeats its captions, sequences stop at the end token, the
// recorded log-probabilities equal the teacher-forced ones (so dropping finished rows keeps rows apart),
// greedy equals the plain greedy loop, and nothing leaks.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../../src/tf/tf.js';
import { initBackend } from '../../src/tf/backend.js';
import { greedyCaptions, sampleCaptions, sampleRow, words } from '../../src/decode/sample.js';
import { greedyDecode } from '../helpers/greedy.js';
import { sequenceBatch, sequenceLogProbs } from '../../src/train/scst.js';
import { rng } from '../../src/util/random.js';
import {
  attnSpec,
  chiSquarePValue,
  mergeSpec,
  randomFeatures,
  tinyAttention,
  tinyMerge,
} from '../helpers/tiny-decoders.js';

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
});
afterAll(async () => {
  await tf.setBackend('cpu');
});

const D = attnSpec.positions * attnSpec.channels;
const draw = { start: 2, end: 3, maxLength: 6 };

/** Chi-square statistic and p-value of counts against probabilities (bins with expectation < 5 merged). */
function chiSquare(counts: number[], probs: number[]): number {
  const total = counts.reduce((a, b) => a + b, 0);
  let stat = 0;
  let bins = 0;
  let restO = 0;
  let restE = 0;
  counts.forEach((o, v) => {
    const e = probs[v] * total;
    if (e < 5) {
      restO += o;
      restE += e;
      return;
    }
    stat += ((o - e) * (o - e)) / e;
    bins++;
  });
  if (restE > 0) {
    stat += ((restO - restE) * (restO - restE)) / restE;
    bins++;
  }
  return chiSquarePValue(stat, bins - 1);
}

describe('sampleCaptions', () => {
  it('first tokens follow the model softmax (chi-square over 4000 samples, fixed seed), and the test has power', async () => {
    const bias = [-2, 0.5, -1, 0.2, 1.5, 0.8, -0.5, 2, 0, 1, -3];
    const dec = tinyAttention(4, bias);
    try {
      const f = randomFeatures(1, D, 5);
      const state = dec.initState(f);
      const r = dec.step(state, [2]);
      const probs = Array.from(await r.logProbs.data()).map(Math.exp);
      tf.dispose([r.logProbs, ...Object.values(state), ...Object.values(r.state)]);
      const seqs = await sampleCaptions(dec, f, 4000, { ...draw, maxLength: 1, seed: 123 });
      expect(seqs.steps).toBe(1);
      const counts = new Array(attnSpec.vocabSize).fill(0);
      for (let s = 0; s < seqs.count; s++) counts[seqs.tokens[s]]++;
      const p = chiSquare(counts, probs);
      expect(p).toBeGreaterThan(1e-3);
      // the same counts against a uniform distribution: rejected
      expect(
        chiSquare(
          counts,
          probs.map(() => 1 / probs.length),
        ),
      ).toBeLessThan(1e-6);
    } finally {
      dec.dispose();
    }
  });

  it('sampleRow draws from softmax of a log-probability row (chi-square)', () => {
    const probs = [0.05, 0.5, 0.2, 0.25];
    const lp = Float32Array.from(probs.map(Math.log));
    const r = rng(7);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 3000; i++) counts[sampleRow(lp, 0, 4, r)]++;
    expect(chiSquare(counts, probs)).toBeGreaterThan(1e-3);
  });

  it('is repeatable per seed, stops at the end token, and its log-probabilities equal teacher forcing', async () => {
    for (const which of ['attention', 'merge'] as const) {
      const m = which === 'merge' ? tinyMerge(3) : null;
      const dec = m ? m.decoder : tinyAttention(3);
      const dim = which === 'merge' ? mergeSpec.featureDim : D;
      try {
        const f = randomFeatures(3, dim, 9);
        const before = tf.memory().numTensors;
        const a = await sampleCaptions(dec, f, 4, { ...draw, seed: 1 });
        const b = await sampleCaptions(dec, f, 4, { ...draw, seed: 1 });
        const c = await sampleCaptions(dec, f, 4, { ...draw, seed: 2 });
        expect(tf.memory().numTensors).toBe(before);
        expect(a.tokens).toEqual(b.tokens);
        expect(a.tokens).not.toEqual(c.tokens);
        expect(a.count).toBe(12);
        let endedSome = false;
        for (let s = 0; s < a.count; s++) {
          const L = a.lengths[s];
          expect(L).toBeGreaterThanOrEqual(1);
          expect(L).toBeLessThanOrEqual(draw.maxLength);
          for (let t = 0; t < a.steps; t++) expect(a.mask[s * a.steps + t]).toBe(t < L ? 1 : 0);
          const row = Array.from(a.tokens.subarray(s * a.steps, s * a.steps + L));
          // the end token only ever comes last, and then the sequence counts as ended
          expect(row.slice(0, -1)).not.toContain(3);
          expect(a.ended[s] === 1).toBe(row[L - 1] === 3);
          if (a.ended[s]) endedSome = true;
          expect(Array.from(words(a, s))).toEqual(a.ended[s] ? row.slice(0, -1) : row);
        }
        // with k = 4 per image some rows finish early, so the finished-row compaction ran
        expect(endedSome || a.lengths.some((l) => l < a.steps)).toBe(true);
        const rows = Array.from({ length: a.count }, (_, s) => f[Math.floor(s / 4)]);
        const lp = sequenceLogProbs(dec, sequenceBatch(a, rows, 2));
        const got = Array.from(await lp.data());
        lp.dispose();
        got.forEach((v, s) => expect(v).toBeCloseTo(a.logProbs![s], 4));
        expect(tf.memory().numTensors).toBe(before);
      } finally {
        dec.dispose();
      }
    }
  });

  it('a model that always says the end token gives length-1 ended sequences', async () => {
    const bias = new Array(attnSpec.vocabSize).fill(-30);
    bias[3] = 30;
    const dec = tinyAttention(1, bias);
    try {
      const s = await sampleCaptions(dec, randomFeatures(2, D, 1), 3, { ...draw, seed: 5 });
      expect(Array.from(s.lengths)).toEqual([1, 1, 1, 1, 1, 1]);
      expect(Array.from(s.ended)).toEqual([1, 1, 1, 1, 1, 1]);
      expect(words(s, 0).length).toBe(0);
    } finally {
      dec.dispose();
    }
  });

  it('takes a [N, D] features tensor (left alone) and draws what the arrays draw', async () => {
    const dec = tinyAttention(6);
    const f = randomFeatures(2, D, 8);
    const x = tf.tensor2d(Float32Array.from(f.flatMap((v) => Array.from(v))), [2, D]);
    try {
      const before = tf.memory().numTensors;
      const a = await sampleCaptions(dec, x, 3, { ...draw, seed: 4 });
      const b = await sampleCaptions(dec, f, 3, { ...draw, seed: 4 });
      expect(tf.memory().numTensors).toBe(before);
      expect(x.isDisposed).toBe(false);
      expect(a.tokens).toEqual(b.tokens);
    } finally {
      x.dispose();
      dec.dispose();
    }
  });

  it('rejects a bad k or maxLength', async () => {
    const dec = tinyAttention(1);
    try {
      await expect(sampleCaptions(dec, randomFeatures(1, D, 1), 0, { ...draw, seed: 1 })).rejects.toThrow(/k must be/);
      await expect(sampleCaptions(dec, randomFeatures(1, D, 1), 2, { ...draw, maxLength: 0, seed: 1 })).rejects.toThrow(
        /maxLength/,
      );
    } finally {
      dec.dispose();
    }
  });
});

describe('greedyCaptions', () => {
  it('equals the plain greedy loop (model/greedy.ts) on the merge decoder, without leaks', async () => {
    const { model, decoder } = tinyMerge(8);
    try {
      const f = randomFeatures(5, mergeSpec.featureDim, 3);
      const before = tf.memory().numTensors;
      const g = await greedyCaptions(decoder, f, draw);
      expect(tf.memory().numTensors).toBe(before);
      const want = await greedyDecode(model, f, draw);
      for (let i = 0; i < 5; i++) expect(Array.from(words(g, i))).toEqual(want[i]);
      expect(g.logProbs).toBeUndefined();
    } finally {
      model.dispose();
    }
  });
});

describe('chiSquarePValue (test helper)', () => {
  it('matches tabulated critical values', () => {
    expect(chiSquarePValue(18.307, 10)).toBeCloseTo(0.05, 4);
    expect(chiSquarePValue(29.588, 10)).toBeCloseTo(0.001, 5);
    expect(chiSquarePValue(3.841, 1)).toBeCloseTo(0.05, 4);
    expect(chiSquarePValue(500, 10)).toBeLessThan(1e-90);
  });
});
