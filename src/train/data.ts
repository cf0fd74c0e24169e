// Training data plumbing (no TF): caption examples from the prepared splits, feature lookups checked up
// front, seeded shuffling into batches, and the flat arrays a CaptionBatch needs.
import { DataError } from '../errors.js';
import type { PreparedImage } from '../prep/prepared.js';
import { makeBatch, type CaptionBatch } from '../model/decoders/batch.js';
import { shuffleInPlace, type Rng } from '../util/random.js';

/** Where image vectors come from (the feature cache, or an in-memory map in tests). */
export interface FeatureSource {
  dim: number;
  has(key: string): boolean;
  get(key: string): Float32Array;
}

export interface Example {
  image: string;
  tokens: number[];
}

/** One example per caption, in file order; `limit` > 0 keeps the first `limit` captions. */
export function examplesOf(images: readonly PreparedImage[], limit = 0): Example[] {
  const out: Example[] = [];
  for (const im of images) {
    for (const t of im.tokens) {
      if (t.length < 2) continue; // nothing to predict
      out.push({ image: im.image, tokens: t });
      if (limit > 0 && out.length >= limit) return out;
    }
  }
  return out;
}

/** DataError naming the first missing keys when the feature source lacks images of a split. */
export function checkFeatureCoverage(
  images: readonly PreparedImage[],
  source: FeatureSource,
  split: string,
  where: string,
): void {
  const missing = images.filter((im) => !source.has(im.image)).map((im) => im.image);
  if (missing.length) {
    const first = missing.slice(0, 5).join(', ');
    throw new DataError(
      `${where}: the feature cache has no vectors for ${missing.length} of ${images.length} ${split} images (e.g. ${first}); run \`captioner features\` for this prepared dataset`,
    );
  }
}

/** Batches of examples; shuffled by `r` when given (a copy; `examples` is left as is). */
export function batchesOf<T>(examples: readonly T[], batchSize: number, r?: Rng): T[][] {
  const order = [...examples];
  if (r) shuffleInPlace(order, r);
  const out: T[][] = [];
  for (let i = 0; i < order.length; i += batchSize) out.push(order.slice(i, i + batchSize));
  return out;
}

export function buildBatch(examples: readonly Example[], features: FeatureSource): CaptionBatch {
  return makeBatch(
    examples.map((e) => ({ features: features.get(e.image), tokens: e.tokens })),
    features.dim,
  );
}

/** Number of predicted tokens in a list of examples. */
export function targetTokens(examples: readonly Example[]): number {
  let n = 0;
  for (const e of examples) for (let i = 1; i < e.tokens.length; i++) if (e.tokens[i] !== 0) n++;
  return n;
}

/** A 32-bit seed mixed from several integers (for per-epoch shuffles and per-step dropout). */
export function mixSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    h = Math.imul(h ^ (p >>> 0), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
  }
  return h >>> 0;
}
