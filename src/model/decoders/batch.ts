// What every decoder shares about its inputs (pure: no TF, no I/O): caption batches, the per-dimension
// or per-channel feature standardisation computed on the training split, and the mapping from a feature
// cache's per-image shape ([D] vector, or [H, W, C] grid stored row-major NHWC) to a decoder's
// featureShape ([D], or [P, C] with P = H * W positions: the same floats, no copy).
import { DataError, ModelError } from '../../errors.js';

/** Per-dimension (vector) or per-channel (grid) standardisation of the image features. */
export interface FeatureNorm {
  mean: Float32Array;
  std: Float32Array;
}

/** A batch of whole captions, trimmed to the longest caption in the batch. */
export interface CaptionBatch {
  /** Batch size B. */
  size: number;
  /** Input steps T (longest caption length - 1). */
  steps: number;
  /** [B * D] image features (raw, D = prod(featureShape); the model standardises them). */
  images: Float32Array;
  /** [B * T] input tokens t[0..L-2], padded with 0. */
  inputs: Int32Array;
  /** Flat positions b * T + t whose target is a real token. */
  positions: Int32Array;
  /** Target token for each entry of `positions`. */
  targets: Int32Array;
}

/** The normalisation that changes nothing: mean 0, std 1 for each of `dim` channels (a fresh model's). */
export function identityNorm(dim: number): FeatureNorm {
  return { mean: new Float32Array(dim), std: new Float32Array(dim).fill(1) };
}

/**
 * Mean and std per channel over the training features: each vector holds `positions` x `channels`
 * floats (positions major; positions = 1 for plain vectors), and every position of every image is one
 * sample of its channel. Each std is floored at the mean std over all channels: sparse features
 * (random-VGG16 units that are almost always 0) otherwise get a tiny std, and an unseen image that
 * activates such a unit gets a z-score in the thousands, which wrecks validation and captioning.
 * Constant channels therefore also map to 0 without dividing by 0.
 */
export function computeFeatureNorm(vectors: Iterable<Float32Array>, channels: number, positions = 1): FeatureNorm {
  const dim = channels;
  const size = positions * channels;
  const sum = new Float64Array(dim);
  const sq = new Float64Array(dim);
  let n = 0;
  for (const v of vectors) {
    if (v.length !== size)
      throw new ModelError(
        `feature vector of length ${v.length}, expected ${size}${positions > 1 ? ` (${positions} positions x ${channels} channels)` : ''}`,
      );
    for (let p = 0, o = 0; p < positions; p++) {
      for (let i = 0; i < dim; i++, o++) {
        sum[i] += v[o];
        sq[i] += v[o] * v[o];
      }
    }
    n += positions;
  }
  const mean = new Float32Array(dim);
  const raw = new Float64Array(dim);
  let stdSum = 0;
  for (let i = 0; i < dim; i++) {
    const m = n ? sum[i] / n : 0;
    const variance = n ? Math.max(0, sq[i] / n - m * m) : 0;
    mean[i] = m;
    raw[i] = Math.sqrt(variance);
    stdSum += raw[i];
  }
  const floor = stdSum > 0 ? stdSum / dim : 1;
  const std = new Float32Array(dim);
  for (let i = 0; i < dim; i++) std[i] = Math.max(raw[i], floor);
  return { mean, std };
}

/** Mean over the positions of one grid feature [P * C] -> [C]. */
export function meanPool(v: Float32Array, positions: number, channels: number): Float32Array {
  const out = new Float64Array(channels);
  for (let p = 0, o = 0; p < positions; p++) for (let c = 0; c < channels; c++, o++) out[c] += v[o];
  return Float32Array.from(out, (x) => x / positions);
}

/**
 * The decoder-side shape of a feature cache's per-image shape: [D] stays [D]; a grid [H, W, C]
 * (row-major, channels last) is [H * W, C] positions x channels. DataError on anything else.
 */
export function decoderFeatureShape(cacheShape: readonly number[], where = 'the feature cache'): number[] {
  const ok = cacheShape.length > 0 && cacheShape.every((d) => Number.isInteger(d) && d > 0);
  if (ok && cacheShape.length === 1) return [cacheShape[0]];
  if (ok && cacheShape.length === 2) return [cacheShape[0], cacheShape[1]];
  if (ok && cacheShape.length === 3) return [cacheShape[0] * cacheShape[1], cacheShape[2]];
  throw new DataError(
    `${where}: unsupported feature shape [${cacheShape.join(', ')}] (expected a vector [D] or a grid [H, W, C])`,
  );
}

/** Build a batch from (feature vector, token sequence [start, ..., end]) pairs; featureDim = values per image. */
export function makeBatch(
  items: { features: Float32Array; tokens: ArrayLike<number> }[],
  featureDim: number,
): CaptionBatch {
  const B = items.length;
  let maxLen = 2;
  for (const it of items) maxLen = Math.max(maxLen, it.tokens.length);
  const T = maxLen - 1;
  const images = new Float32Array(B * featureDim);
  const inputs = new Int32Array(B * T);
  const pos: number[] = [];
  const tgt: number[] = [];
  items.forEach((it, b) => {
    if (it.features.length !== featureDim)
      throw new ModelError(`feature vector of length ${it.features.length}, expected ${featureDim}`);
    images.set(it.features, b * featureDim);
    const L = it.tokens.length;
    for (let t = 0; t < L - 1; t++) {
      inputs[b * T + t] = it.tokens[t];
      const next = it.tokens[t + 1];
      if (next !== 0) {
        pos.push(b * T + t);
        tgt.push(next);
      }
    }
  });
  return { size: B, steps: T, images, inputs, positions: Int32Array.from(pos), targets: Int32Array.from(tgt) };
}

/**
 * Check a batch against the decoder it is fed to: `perImage` feature values per image (`shape` names them
 * in the error), one input token per step, one position per target, every position inside the batch.
 */
export function checkBatch(b: CaptionBatch, perImage: number, shape: string): void {
  if (b.images.length !== b.size * perImage)
    throw new ModelError(`batch: ${b.images.length} feature values for ${b.size} images of ${shape}`);
  if (b.inputs.length !== b.size * b.steps)
    throw new ModelError(`batch: ${b.inputs.length} input tokens, expected ${b.size} x ${b.steps}`);
  if (b.positions.length !== b.targets.length) throw new ModelError('batch: positions and targets differ in length');
  if (b.targets.length === 0) throw new ModelError('batch: no target tokens');
  for (const p of b.positions)
    if (!(p >= 0 && p < b.size * b.steps))
      throw new ModelError(`batch: target position ${p} outside 0..${b.size * b.steps - 1}`);
}
