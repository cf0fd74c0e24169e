// Self-critical sequence training (src/train/scst.ts) on wasm: baselines (Luo's leave-one-out mean,
// greedy), the policy-gradient step's sign and first-order scale on hand-made sequences, that
// scstStep raises the expected reward of a toy reward on both decoders, and that nothing leaks.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../../src/tf/tf.js';
import { initBackend } from '../../src/tf/backend.js';
import { sampleCaptions, type Sequences } from '../../src/decode/sample.js';
import type { Decoder } from '../../src/model/decoders/types.js';
import { Adam } from '../../src/train/adam.js';
import {
  advantages,
  policyGradientLoss,
  scstStep,
  sequenceBatch,
  sequenceLogProbs,
  type GradientApplier,
  type RewardFn,
} from '../../src/train/scst.js';
import {
  attnSpec,
  mergeSpec,
  randomFeatures,
  tinyAttention,
  tinyMerge,
  tinyTransformer,
} from '../helpers/tiny-decoders.js';

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
});
afterAll(async () => {
  await tf.setBackend('cpu');
});

const D = attnSpec.positions * attnSpec.channels;

/** Hand-made sequences (each a list of drawn tokens, the end token 3 last when ended). */
function seqsOf(rows: number[][]): Sequences {
  const T = Math.max(...rows.map((r) => r.length));
  const S = rows.length;
  const tokens = new Int32Array(S * T);
  const mask = new Float32Array(S * T);
  rows.forEach((r, s) => r.forEach((t, i) => ((tokens[s * T + i] = t), (mask[s * T + i] = 1))));
  return {
    count: S,
    steps: T,
    tokens,
    mask,
    lengths: Int32Array.from(rows.map((r) => r.length)),
    ended: Uint8Array.from(rows.map((r) => (r[r.length - 1] === 3 ? 1 : 0))),
  };
}

function sgd(dec: Decoder, lr: number): GradientApplier {
  return {
    apply(grads) {
      for (const [name, g] of Object.entries(grads)) {
        const w = dec.weights[name];
        tf.tidy(() => w.assign(tf.sub(w, tf.mul(g, lr))));
      }
    },
  };
}

async function logProbs(dec: Decoder, seqs: Sequences, rows: Float32Array[]): Promise<number[]> {
  const t = sequenceLogProbs(dec, sequenceBatch(seqs, rows, 2));
  const v = Array.from(await t.data());
  t.dispose();
  return v;
}

describe('advantages', () => {
  it("'mean': each sample against the mean of its image's other samples (Luo 2020)", () => {
    const { advantage, baseline } = advantages([1, 2, 6, 0, 0, 3], 3, 'mean');
    expect(Array.from(baseline)).toEqual([4, 3.5, 1.5, 1.5, 1.5, 0]);
    expect(Array.from(advantage)).toEqual([-3, -1.5, 4.5, -1.5, -1.5, 3]);
  });
  it("'greedy': each sample against its image's greedy reward", () => {
    const { advantage } = advantages([1, 2, 6, 0], 2, 'greedy', [1.5, 1]);
    expect(Array.from(advantage)).toEqual([-0.5, 0.5, 5, -1]);
  });
  it('rejects k = 1 with the mean baseline, missing greedy rewards, ragged rewards', () => {
    expect(() => advantages([1, 2], 1, 'mean')).toThrow(/k >= 2/);
    expect(() => advantages([1, 2], 2, 'greedy')).toThrow(/greedy rewards/);
    expect(() => advantages([1, 2, 3], 2, 'mean')).toThrow(/multiple of k/);
  });
});

describe('policy-gradient step', () => {
  it('raises log p of the sample above its baseline, lowers the one below, by lr x |grad|^2 to first order', async () => {
    for (const which of ['attention', 'merge', 'transformer'] as const) {
      const dec =
        which === 'merge' ? tinyMerge(5).decoder : which === 'attention' ? tinyAttention(5) : tinyTransformer(5);
      const dim = which === 'merge' ? mergeSpec.featureDim : D;
      try {
        const f = randomFeatures(1, dim, 2);
        const seqs = seqsOf([
          [5, 6, 7, 3],
          [8, 4, 3],
          [9, 9, 9, 9, 9],
        ]); // the last one truncated (no end token)
        const rows = [f[0], f[0], f[0]];
        const batch = sequenceBatch(seqs, rows, 2);
        expect(batch.targets.length).toBe(12);
        const adv = Float32Array.from([1, -1, 0]);
        const before = await logProbs(dec, seqs, rows);
        const nt = tf.memory().numTensors;
        const { value, grads } = tf.variableGrads(() => policyGradientLoss(dec, batch, adv), dec.variables);
        // the loss is -(1/S) sum_s adv_s log p_s
        expect((await value.data())[0]).toBeCloseTo(-(before[0] - before[1]) / 3, 5);
        const sq = tf.tidy(() => tf.addN(Object.values(grads).map((g) => tf.sum(tf.square(g)))));
        const g2 = (await sq.data())[0];
        const lr = 1e-3;
        const byName: Record<string, tf.Tensor> = {};
        for (const [n, v] of Object.entries(dec.weights)) byName[n] = grads[v.name];
        sgd(dec, lr).apply(byName);
        tf.dispose([value, sq, ...Object.values(grads)]);
        expect(tf.memory().numTensors).toBe(nt);
        const after = await logProbs(dec, seqs, rows);
        expect(after[0]).toBeGreaterThan(before[0]);
        expect(after[1]).toBeLessThan(before[1]);
        const gain = (after[0] - before[0] - (after[1] - before[1])) / 3; // change of -loss
        expect(g2).toBeGreaterThan(0);
        expect(Math.abs(gain / (lr * g2) - 1)).toBeLessThan(0.1);
      } finally {
        dec.dispose();
      }
    }
  });
});

describe('scstStep', () => {
  /** A toy reward: +1 per token 5, -0.2 per other word; ids are words without the end token. */
  const reward: RewardFn = (_id, tokens) => {
    let r = 0;
    for (const t of tokens) r += t === 5 ? 1 : -0.2;
    return r;
  };

  async function expectedReward(dec: Decoder, f: Float32Array[]): Promise<number> {
    const s = await sampleCaptions(dec, f, 100, { start: 2, end: 3, maxLength: 6, seed: 999 });
    let sum = 0;
    for (let i = 0; i < s.count; i++) {
      const T = s.steps;
      const n = s.lengths[i] - s.ended[i];
      sum += reward('x', s.tokens.slice(i * T, i * T + n));
    }
    return sum / s.count;
  }

  it('raises the expected reward (mean and greedy baselines, every decoder) and leaves no tensors', async () => {
    for (const which of ['attention', 'merge', 'transformer'] as const) {
      for (const baseline of ['mean', 'greedy'] as const) {
        const dec =
          which === 'merge' ? tinyMerge(11).decoder : which === 'attention' ? tinyAttention(11) : tinyTransformer(11);
        const dim = which === 'merge' ? mergeSpec.featureDim : D;
        const adam = new Adam(dec.weights, { learningRate: 0.05, clipNorm: 5 });
        try {
          const f = randomFeatures(3, dim, 4);
          const ids = ['a', 'b', 'c'];
          const r0 = await expectedReward(dec, f);
          const nt = tf.memory().numTensors;
          let last;
          for (let i = 0; i < 8; i++) {
            last = await scstStep(dec, adam, { features: f, imageIds: ids }, reward, {
              k: 4,
              baseline,
              maxLength: 6,
              seed: 100 + i,
              start: 2,
              end: 3,
            });
          }
          expect(tf.memory().numTensors).toBe(nt);
          expect(last!.samples).toBe(12);
          expect(last!.images).toBe(3);
          expect(Number.isFinite(last!.loss)).toBe(true);
          expect(last!.gradNorm).toBeGreaterThanOrEqual(0); // 0 once every sample equals its baseline
          if (baseline === 'greedy') expect(last!.greedyReward).toBeCloseTo(last!.baseline, 12);
          const r1 = await expectedReward(dec, f);
          expect(r1, `${which}/${baseline}: ${r0} -> ${r1}`).toBeGreaterThan(r0 + 0.3);
        } finally {
          adam.dispose();
          dec.dispose();
        }
      }
    }
  });

  it('rejects mismatched ids and an empty batch', async () => {
    const dec = tinyAttention(1);
    const opts = { k: 2, baseline: 'mean' as const, maxLength: 4, seed: 1, start: 2, end: 3 };
    try {
      await expect(
        scstStep(dec, sgd(dec, 0.1), { features: randomFeatures(2, D, 1), imageIds: ['a'] }, reward, opts),
      ).rejects.toThrow(/image ids/);
      await expect(scstStep(dec, sgd(dec, 0.1), { features: [], imageIds: [] }, reward, opts)).rejects.toThrow(/empty/);
    } finally {
      dec.dispose();
    }
  });
});

describe('wordRewardFn', () => {
  it('maps token ids to words for a word-level scorer (CiderDReward)', async () => {
    const { CiderDReward } = await import('../../src/eval/metrics/index.js');
    const { wordRewardFn } = await import('../../src/train/scst.js');
    const vocab = ['<pad>', '<unk>', 'startseq', 'endseq', 'a', 'dog', 'runs', 'cat'];
    const scorer = new CiderDReward([
      [
        'i1',
        [
          ['a', 'dog', 'runs'],
          ['a', 'dog'],
        ],
      ],
      [
        'i2',
        [
          ['a', 'cat'],
          ['the', 'cat', 'sleeps'],
        ],
      ],
    ]);
    const fn = wordRewardFn(scorer, vocab);
    expect(fn('i1', Int32Array.from([4, 5, 6]))).toBe(scorer.reward('i1', ['a', 'dog', 'runs']));
    expect(fn('i1', Int32Array.from([4, 5, 6]))).toBeGreaterThan(fn('i1', Int32Array.from([4, 7])));
    expect(() => fn('i1', Int32Array.from([42]))).toThrow(/outside the vocabulary/);
  });
});
