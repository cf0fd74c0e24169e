// Tiny decoders behind the Decoder interface for SCST / sampling tests.
import type { FeatureNorm } from '../../src/model/decoders/batch.js';
import { MergeDecoder, type MergeSpec } from '../../src/model/decoders/merge.js';
import { AttentionDecoder, attentionInitialWeights, type AttentionSpec } from '../../src/model/decoders/attention.js';
import { TransformerDecoder, type TransformerSpec } from '../../src/model/decoders/transformer.js';
import type { Decoder } from '../../src/model/decoders/types.js';
import { rng } from '../../src/util/random.js';

export const attnSpec: AttentionSpec = {
  vocabSize: 11,
  positions: 3,
  channels: 4,
  embedDim: 6,
  units: 7,
  attentionDim: 5,
  dropout: 0.3,
  alphaReg: 0,
};
/** The same feature size as attnSpec (3 positions x 4 channels). */
export const transformerSpec: TransformerSpec = {
  vocabSize: 11,
  positions: 3,
  channels: 4,
  layers: 2,
  heads: 2,
  modelDim: 8,
  ffnDim: 12,
  dropout: 0.1,
  positionEncoding: 'sinusoidal',
  imagePositions: 'learned',
  tieEmbeddings: true,
  maxLength: 200,
};
export const mergeSpec: MergeSpec = {
  vocabSize: 11,
  featureDim: 6,
  embedDim: 5,
  units: 7,
  imageUnits: 7,
  hiddenUnits: 8,
  merge: 'add',
  dropout: 0.3,
};

/** A seeded attention decoder; `bias` replaces the output bias (shapes the first-step distribution). */
export function tinyAttention(seed: number, bias?: number[]): AttentionDecoder {
  const w = attentionInitialWeights(attnSpec, seed);
  if (bias) w['output/bias'] = Float32Array.from(bias);
  const norm: FeatureNorm = {
    mean: new Float32Array(attnSpec.channels),
    std: new Float32Array(attnSpec.channels).fill(1),
  };
  return new AttentionDecoder(attnSpec, w, norm);
}

/** A seeded transformer decoder over attnSpec-sized features. */
export function tinyTransformer(seed: number): TransformerDecoder {
  return TransformerDecoder.create(transformerSpec, seed);
}

/** A seeded merge decoder (it implements Decoder itself; `model` and `decoder` are the same object). */
export function tinyMerge(seed: number): { model: MergeDecoder; decoder: Decoder } {
  const model = MergeDecoder.create(mergeSpec, seed);
  return { model, decoder: model };
}

/** n random feature vectors of `dim` values. */
export function randomFeatures(n: number, dim: number, seed: number): Float32Array[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => Float32Array.from({ length: dim }, () => 2 * r() - 1));
}

/** Upper tail of the chi-square distribution with `df` degrees of freedom at x (regularised gamma Q). */
export function chiSquarePValue(x: number, df: number): number {
  const a = df / 2;
  const z = x / 2;
  if (z <= 0) return 1;
  const front = -z + a * Math.log(z) - lgamma(a);
  if (z < a + 1) {
    // lower regularised gamma P(a, z) by its series
    let term = 1 / a;
    let sum = term;
    for (let n = 1; n < 1000; n++) {
      term *= z / (a + n);
      sum += term;
      if (term < sum * 1e-15) break;
    }
    return Math.max(0, 1 - Math.exp(front) * sum);
  }
  // upper regularised gamma Q(a, z) by its continued fraction (modified Lentz)
  const tiny = 1e-300;
  let b = z + 1 - a;
  let c = 1 / tiny;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 1000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-15) break;
  }
  return Math.exp(front) * h;
}

function lgamma(x: number): number {
  // Lanczos (g = 7, n = 9)
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - lgamma(1 - x);
  x -= 1;
  let a = c[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}
