// One model replica on the current TF backend (a worker's; the main-thread trainer builds its decoder here
// too): builds the decoder of a kind from its spec, gives its variables the flat weight vector's values (new
// tensors), and computes the weighted gradient of one batch slice straight into a flat Float32Array region.
import { tf } from '../../tf/tf.js';
import { assignFloats, copyInto } from '../../tf/copy.js';
import { ModelError } from '../../errors.js';
import type { CaptionBatch, FeatureNorm } from '../../model/decoders/batch.js';
import { decoderKind, type LossOptions, type LossTerms } from '../../model/decoders/index.js';
import type { MergeSpec } from '../../model/decoders/merge.js';
import type { AttentionSpec } from '../../model/decoders/attention.js';
import type { TransformerSpec } from '../../model/decoders/transformer.js';
import type { FlatLayout } from './flat.js';

/** Decoder kinds the parallel trainer can build (any registered kind: src/model/decoders/index.ts). */
export type ReplicaKind = 'merge' | 'attention' | 'transformer';
export type ReplicaSpec = MergeSpec | AttentionSpec | TransformerSpec;

/** The parts of a decoder training needs (every Decoder has them). */
export interface TrainableDecoder {
  readonly weights: Record<string, tf.Variable>;
  readonly variables: tf.Variable[];
  readonly spec: { readonly vocabSize: number };
  loss(batch: CaptionBatch, opts: LossOptions): tf.Scalar;
  /** The loss's parts: crossEntropy (a mean over target tokens) and any per-caption terms (attention's regulariser). */
  lossTerms(batch: CaptionBatch, opts: LossOptions): LossTerms;
  dispose(): void;
}

const kindOf = (kind: ReplicaKind) => {
  try {
    return decoderKind(kind);
  } catch {
    throw new ModelError(`parallel training: unknown decoder kind ${JSON.stringify(kind)}`);
  }
};

export function kindShapes(kind: ReplicaKind, spec: ReplicaSpec): Record<string, number[]> {
  return kindOf(kind).weightShapes(spec as never);
}

/** Floats per image in a batch for this kind and spec. */
export function featureSizeOf(kind: ReplicaKind, spec: ReplicaSpec): number {
  if (kind === 'merge') {
    const s = spec as MergeSpec;
    return s.featureDim * (s.positions ?? 1);
  }
  const s = spec as AttentionSpec | TransformerSpec; // grid decoders: positions x channels
  return s.positions * s.channels;
}

export function buildDecoder(
  kind: ReplicaKind,
  spec: ReplicaSpec,
  values: Record<string, Float32Array>,
  norm: FeatureNorm,
): TrainableDecoder {
  return kindOf(kind).create(spec as never, values, norm) as unknown as TrainableDecoder;
}

/** Give every variable its range of the flat weights (new tensors: see src/tf/copy.ts on in-place writes). */
export function loadFlat(model: TrainableDecoder, layout: FlatLayout, flat: Float32Array): void {
  layout.names.forEach((n, i) =>
    assignFloats(model.weights[n], flat.subarray(layout.offsets[i], layout.offsets[i] + layout.sizes[i])),
  );
}

/** Token ids must lie in the vocabulary (the wasm gather does not check). */
export function checkTokens(b: CaptionBatch, vocab: number): void {
  for (const a of [b.inputs, b.targets]) {
    for (let i = 0; i < a.length; i++) {
      if (!(a[i] >= 0 && a[i] < vocab))
        throw new ModelError(`batch: token ${a[i]} outside the vocabulary (0..${vocab - 1})`);
    }
  }
}

/** How a slice's loss terms are weighted (see split.ts). */
export interface SliceWeights {
  /** Of the per-token mean (cross-entropy). */
  tokens: number;
  /** Of a per-caption mean (the attention regulariser). */
  rows: number;
}

/**
 * Gradient of the slice's weighted objective into `out` (layout.total floats). Returns that weighted
 * objective (`total`) and its weighted cross-entropy (`loss`): the slices' values add up to the whole batch's.
 * No tensors survive the call.
 */
export async function sliceGradient(
  model: TrainableDecoder,
  layout: FlatLayout,
  slice: CaptionBatch,
  w: SliceWeights,
  seed: number,
  out: Float32Array,
  labelSmoothing = 0,
): Promise<{ loss: number; total: number }> {
  checkTokens(slice, model.spec.vocabSize);
  const vars = layout.names.map((n) => model.weights[n]);
  let ce: tf.Scalar | null = null;
  const { value, grads } = tf.variableGrads(() => {
    // cross-entropy is a mean over target tokens; every other term (the attention regulariser) a mean over captions
    const terms = model.lossTerms(slice, { training: true, seed, labelSmoothing });
    ce = tf.keep(tf.mul(terms.crossEntropy, w.tokens) as tf.Scalar);
    let total: tf.Tensor = ce;
    for (const [name, term] of Object.entries(terms))
      if (name !== 'crossEntropy') total = tf.add(total, tf.mul(term, w.rows));
    return total as tf.Scalar;
  }, vars);
  try {
    layout.names.forEach((n, i) => {
      const g = grads[model.weights[n].name];
      if (!g) throw new ModelError(`parallel training: no gradient for "${n}"`);
      copyInto(g, out, layout.offsets[i]);
    });
    return { total: (await value.data())[0], loss: (await (ce as unknown as tf.Scalar).data())[0] };
  } finally {
    tf.dispose([value, ...Object.values(grads)]);
    if (ce) (ce as tf.Scalar).dispose();
  }
}
