// Self-critical sequence training (Rennie et al. 2017, "Self-critical Sequence Training for Image
// Captioning"; the k-sample mean baseline of Luo 2020, "A Better Variant of Self-Critical Sequence
// Training"): REINFORCE on a caption reward (CIDEr-D, src/eval/metrics/cider-reward.ts) with a baseline.
// For S = N*k sampled captions y^s with rewards r_s and baselines b_s the loss is
//   L = -(1/S) sum_s (r_s - b_s) sum_t log p(y^s_t | y^s_<t, image)     (real tokens only; end included)
// Baselines: 'mean' (each sample's baseline is the mean reward of the image's OTHER k-1 samples) or
// 'greedy' (the reward of the image's greedy caption). Sampling and the log-probabilities both run
// without dropout, so the gradient is that of the policy that drew the samples. The log-probabilities come
// from the decoder's teacher-forced whole-sequence pass (Decoder.logProbsAll, differentiable), which
// builds [S, T, V]: fine for SCST batch sizes; a fused per-row-weighted cross-entropy would be leaner.
import { tf } from '../tf/tf.js';
import { ModelError } from '../errors.js';
import type { CaptionBatch, Decoder } from '../model/decoders/types.js';
import { greedyCaptions, sampleCaptions, words, type Sequences } from '../decode/sample.js';
import { byWeightName } from './adam.js';

export type ScstBaseline = 'mean' | 'greedy';

/** The reward of one caption (token ids without start and end) of one image. */
export type RewardFn = (imageId: string, tokens: Int32Array) => number;

/**
 * A RewardFn from a word-level scorer (e.g. eval/metrics CiderDReward) and the vocabulary's tokens (id ->
 * word). Give the scorer the training captions' own tokens (not vocabulary-mapped ones): a sampled
 * unknown token then matches nothing, as in evaluation.
 */
export function wordRewardFn(
  scorer: { reward(imageId: string, words: readonly string[]): number },
  vocabTokens: readonly string[],
): RewardFn {
  return (imageId, tokens) => {
    const w = new Array<string>(tokens.length);
    for (let i = 0; i < tokens.length; i++) {
      const word = vocabTokens[tokens[i]];
      if (word === undefined)
        throw new ModelError(`SCST: token ${tokens[i]} outside the vocabulary (${vocabTokens.length} tokens)`);
      w[i] = word;
    }
    return scorer.reward(imageId, w);
  };
}

/** Applies gradients keyed by weight name (e.g. train/adam.ts Adam); may return a tensor (e.g. the gradient norm) to dispose. */
export interface GradientApplier {
  apply(grads: Record<string, tf.Tensor>): tf.Tensor | void;
}

export interface ScstOptions {
  /** Samples per image (>= 2 for the 'mean' baseline). */
  k: number;
  baseline: ScstBaseline;
  /** Most tokens drawn per caption, the end token included. */
  maxLength: number;
  /** Sampling seed (vary it per step). */
  seed: number;
  start: number;
  end: number;
}

export interface ScstBatch {
  /** N raw feature vectors (flat, prod(featureShape) each). */
  features: Float32Array[];
  /** N image ids, as the reward function knows them. */
  imageIds: string[];
}

export interface ScstStepResult {
  /** Mean reward of the sampled captions. */
  reward: number;
  /** Mean baseline. */
  baseline: number;
  /** Mean reward of the greedy captions ('greedy' baseline only; equals baseline). */
  greedyReward?: number;
  loss: number;
  /** Global gradient norm, when the applier returns it. */
  gradNorm?: number;
  /** Mean sampled length (tokens, the end token included). */
  meanLength: number;
  /** Share of samples that ran to maxLength without the end token. */
  truncated: number;
  images: number;
  samples: number;
}

/** Per-sample advantages r - b. `rewards`: S = N*k, row i*k + j; `greedy`: N rewards for the 'greedy' baseline. */
export function advantages(
  rewards: ArrayLike<number>,
  k: number,
  baseline: ScstBaseline,
  greedy?: ArrayLike<number>,
): { advantage: Float32Array; baseline: Float64Array } {
  const S = rewards.length;
  if (S % k !== 0) throw new ModelError(`SCST: ${S} rewards is not a multiple of k = ${k}`);
  const N = S / k;
  const base = new Float64Array(S);
  if (baseline === 'mean') {
    if (k < 2) throw new ModelError("SCST: the 'mean' baseline needs k >= 2 samples per image");
    for (let i = 0; i < N; i++) {
      let sum = 0;
      for (let j = 0; j < k; j++) sum += rewards[i * k + j];
      for (let j = 0; j < k; j++) base[i * k + j] = (sum - rewards[i * k + j]) / (k - 1);
    }
  } else if (baseline === 'greedy') {
    if (!greedy || greedy.length !== N)
      throw new ModelError(`SCST: the 'greedy' baseline needs ${N} greedy rewards, got ${greedy?.length ?? 0}`);
    for (let s = 0; s < S; s++) base[s] = greedy[Math.floor(s / k)];
  } else {
    throw new ModelError(`SCST: unknown baseline "${String(baseline)}"`);
  }
  const advantage = new Float32Array(S);
  for (let s = 0; s < S; s++) advantage[s] = rewards[s] - base[s];
  return { advantage, baseline: base };
}

/**
 * Teacher-forcing batch of drawn sequences: row s reads [start, y_1 .. y_{T-1}] and predicts y_1 .. y_T at
 * its real (masked) positions. `features[s]` is row s's image (repeat an image's features k times).
 */
export function sequenceBatch(seqs: Sequences, features: readonly Float32Array[], start: number): CaptionBatch {
  const S = seqs.count;
  const T = seqs.steps;
  if (features.length !== S) throw new ModelError(`SCST: ${features.length} feature rows for ${S} sequences`);
  if (S === 0 || T === 0) throw new ModelError('SCST: no sequences');
  const D = features[0].length;
  const images = new Float32Array(S * D);
  const inputs = new Int32Array(S * T);
  const positions: number[] = [];
  const targets: number[] = [];
  for (let s = 0; s < S; s++) {
    if (features[s].length !== D)
      throw new ModelError(`SCST: feature row ${s} has ${features[s].length} values, expected ${D}`);
    images.set(features[s], s * D);
    for (let t = 0; t < seqs.lengths[s]; t++) {
      inputs[s * T + t] = t === 0 ? start : seqs.tokens[s * T + t - 1];
      positions.push(s * T + t);
      targets.push(seqs.tokens[s * T + t]);
    }
  }
  return {
    size: S,
    steps: T,
    images,
    inputs,
    positions: Int32Array.from(positions),
    targets: Int32Array.from(targets),
  };
}

/**
 * Summed log-probability of each row's real targets [S], differentiable (call inside tf.variableGrads
 * for gradients). No dropout: the same policy the samples were drawn from.
 */
export function sequenceLogProbs(decoder: Decoder, batch: CaptionBatch): tf.Tensor1D {
  const { size: S, steps: T } = batch;
  const V = decoder.spec.vocabSize;
  // targets at every position (0 where there is none) and the real-position mask, [S, T]
  const full = new Int32Array(S * T);
  const mask = new Float32Array(S * T);
  batch.positions.forEach((p, i) => {
    full[p] = batch.targets[i];
    mask[p] = 1;
  });
  return tf.tidy(() => {
    const lp = decoder.logProbsAll(batch); // [S, T, V]
    const onehot = tf.reshape(tf.oneHot(tf.tensor1d(full, 'int32'), V), [S, T, V]); // [S, T, V]
    const picked = tf.sum(tf.mul(lp, onehot), 2); // [S, T]
    return tf.sum(tf.mul(picked, tf.tensor2d(mask, [S, T])), 1) as tf.Tensor1D; // [S]
  });
}

/** The SCST loss -(1/S) sum_s advantage_s * log p(y^s) (a scalar; call inside tf.variableGrads). */
export function policyGradientLoss(decoder: Decoder, batch: CaptionBatch, advantage: Float32Array): tf.Scalar {
  if (advantage.length !== batch.size)
    throw new ModelError(`SCST: ${advantage.length} advantages for ${batch.size} sequences`);
  return tf.tidy(() => {
    const logp = sequenceLogProbs(decoder, batch); // [S]
    return tf.div(tf.neg(tf.sum(tf.mul(logp, tf.tensor1d(advantage)))), batch.size) as tf.Scalar;
  });
}

/**
 * One SCST update on a batch of images: draw k captions per image, score them (and, for the 'greedy'
 * baseline, the greedy captions), and apply the policy gradient. Leaves no tensors behind.
 */
export async function scstStep(
  decoder: Decoder,
  optimizer: GradientApplier,
  batch: ScstBatch,
  rewardFn: RewardFn,
  opts: ScstOptions,
): Promise<ScstStepResult> {
  const N = batch.features.length;
  if (batch.imageIds.length !== N)
    throw new ModelError(`SCST: ${N} feature rows but ${batch.imageIds.length} image ids`);
  if (N === 0) throw new ModelError('SCST: empty batch');
  const { k } = opts;
  const draw = { start: opts.start, end: opts.end, maxLength: opts.maxLength };
  const seqs = await sampleCaptions(decoder, batch.features, k, { ...draw, seed: opts.seed });
  const S = seqs.count;
  const rewards = new Float64Array(S);
  for (let s = 0; s < S; s++) rewards[s] = rewardFn(batch.imageIds[Math.floor(s / k)], words(seqs, s));
  let greedy: Float64Array | undefined;
  if (opts.baseline === 'greedy') {
    const g = await greedyCaptions(decoder, batch.features, draw);
    greedy = new Float64Array(N);
    for (let i = 0; i < N; i++) greedy[i] = rewardFn(batch.imageIds[i], words(g, i));
  }
  const { advantage, baseline } = advantages(rewards, k, opts.baseline, greedy);
  const rows = Array.from({ length: S }, (_, s) => batch.features[Math.floor(s / k)]);
  const tb = sequenceBatch(seqs, rows, opts.start);
  const { value, grads } = tf.variableGrads(() => policyGradientLoss(decoder, tb, advantage), decoder.variables);
  let norm: tf.Tensor | void = undefined;
  try {
    norm = optimizer.apply(byWeightName(decoder.weights, grads));
    const loss = (await value.data())[0];
    const gradNorm = norm ? (await norm.data())[0] : undefined;
    let len = 0;
    let truncated = 0;
    for (let s = 0; s < S; s++) {
      len += seqs.lengths[s];
      if (!seqs.ended[s]) truncated++;
    }
    return {
      reward: mean(rewards),
      baseline: mean(baseline),
      ...(greedy ? { greedyReward: mean(greedy) } : {}),
      loss,
      ...(gradNorm !== undefined ? { gradNorm } : {}),
      meanLength: len / S,
      truncated: truncated / S,
      images: N,
      samples: S,
    };
  } finally {
    tf.dispose([value, ...Object.values(grads)]);
    if (norm) norm.dispose();
  }
}

function mean(xs: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i];
  return xs.length ? s / xs.length : 0;
}
