// The one interface every caption decoder implements (merge, soft attention, ...), and the per-kind
// factory (DecoderKind) that training and loading use to build one from a config or from saved weights.
// Training drives `lossTerms` under tf.variableGrads (it minimises their sum; validation, early stopping
// and reports use crossEntropy alone); decoding (greedy, beam search) drives initState/step and reorders
// hypotheses with the generic gatherState/disposeState of ./state.ts.
import type { tf } from '../../tf/tf.js';
import type { CaptionBatch, FeatureNorm } from './batch.js';
import type { InitScheme } from '../spec.js';

export type { CaptionBatch, FeatureNorm };

/** How a decoder wants its image features: one vector per image, or a grid of positions x channels. */
export type FeatureLayout = 'vector' | 'grid';

/**
 * One-step decoder state for N sequences. Every tensor's first dimension is N (row n belongs to
 * sequence n), so reordering and freeing are generic (./state.ts). Keys are the decoder's own business.
 */
export type DecoderState = Record<string, tf.Tensor>;

export type StepResult = {
  /** Next-word log-probabilities [N, V]. */
  logProbs: tf.Tensor2D;
  /** The state after consuming the tokens (a new object; the input state is left alone). */
  state: DecoderState;
  /** Attention weights [N, P] of this step; only from attention decoders, and only when asked for. */
  attention?: tf.Tensor2D;
};

export interface LossOptions {
  /** Dropout on and the fused custom gradient attached: call inside tf.variableGrads. */
  training: boolean;
  /** Dropout seed (vary it per step). */
  seed?: number;
  /** Floats per chunk of output logits (see ops.ts chunkRows). */
  chunkBudget?: number;
  /**
   * Label smoothing of the training cross-entropy (train.labelSmoothing; 0 or absent: none): with `training`
   * the target distribution is (1 - e) one-hot + e / V. Validation (training false) is always plain.
   */
  labelSmoothing?: number;
}

/** The parts of the training objective; `crossEntropy` is what validation, early stopping and reports use. */
export type LossTerms = { crossEntropy: tf.Scalar } & Record<string, tf.Scalar>;

export interface Decoder {
  /** The kind's name, as saved with the weights (e.g. 'merge', 'attention'). */
  readonly type: string;
  /** Sizes and options (JSON-serialisable; saved with the weights). */
  readonly spec: { readonly vocabSize: number; readonly dropout: number };
  /** Shape of one image's raw features: [D] for 'vector', [P, C] for 'grid'. Batches hold them flat. */
  readonly featureShape: readonly number[];
  /** Trainable weights by name (save order). */
  readonly weights: Record<string, tf.Variable>;
  readonly variables: tf.Variable[];
  /** Feature standardisation: per dimension ('vector', length D) or per channel ('grid', length C). */
  readonly norm: FeatureNorm;
  /** Copy every weight to the host, by name. */
  readWeights(): Promise<Record<string, Float32Array>>;
  /** Scalar training objective (mean next-word cross-entropy over real targets, plus any regulariser). */
  loss(batch: CaptionBatch, opts: LossOptions): tf.Scalar;
  /** The objective's terms (their sum is `loss`): mean next-word cross-entropy plus any regulariser. */
  lossTerms(batch: CaptionBatch, opts: LossOptions): LossTerms;
  /** Log-probabilities [B, T, V] at every input position, no dropout. Tests and small batches only. */
  logProbsAll(batch: CaptionBatch): tf.Tensor3D;
  /** Start states for N images: raw features as N flat arrays, or a [N, prod(featureShape)] tensor. */
  initState(features: Float32Array[] | tf.Tensor2D): DecoderState;
  /** Feed one token per sequence. Tensors returned are the caller's to dispose. */
  step(state: DecoderState, tokens: ArrayLike<number>, opts?: { attention?: boolean }): StepResult;
  /** Free the weights (idempotent). */
  dispose(): void;
}

/** A training recipe: how the weights start, and the cross-entropy's label smoothing and learning-rate warm-up. */
export interface Recipe {
  init: InitScheme;
  labelSmoothing: number;
  warmupSteps: number;
}

/** Per-kind factory: the pure parts (spec, shapes, initial values) and the constructor. */
export interface DecoderKind<S, M = unknown> {
  readonly type: string;
  readonly features: FeatureLayout;
  /** A validated spec from the model config section, the vocabulary size and the feature shape. */
  specFromConfig(model: M, vocabSize: number, featureShape: readonly number[]): S;
  /** Throws ModelError when a (loaded) spec is unusable. */
  validateSpec(spec: S): void;
  /** Every weight with its shape, in save order. */
  weightShapes(spec: S): Record<string, number[]>;
  /**
   * What 'auto' means for this decoder in model.init, train.labelSmoothing and train.warmupSteps: the recipe
   * that trained it best when measured (`npm run bench -- recipe`, docs/models.md#the-training-recipe).
   */
  readonly recipe: Recipe;
  /** Seeded initial values for every weight, drawn by `init` (model.init; default 'keras'). */
  initialWeights(spec: S, seed: number, init?: InitScheme): Record<string, Float32Array>;
  /** Length of the FeatureNorm mean/std vectors. */
  normDim(spec: S): number;
  /** The feature normalisation computed on the training features (raw, prod(featureShape) floats each). */
  featureNorm(spec: S, vectors: Iterable<Float32Array>): FeatureNorm;
  /** Build a decoder from weight values (validated) and a feature normalisation. */
  create(spec: S, values: Record<string, Float32Array>, norm: FeatureNorm): Decoder;
}
