// The Transformer caption decoder (Vaswani et al. 2017's decoder stack over the image as its "encoder
// output", as in the transformer models of self-critical.pytorch), written with plain tf ops over explicit
// weight variables like the other decoders: its spec, seeded initial values, the decoder and its registry
// entry (transformerKind).
//
// Image. One image's features are P x C floats (a grid [H, W, C] read as P = H * W positions, or tokens
// [T, C] of a ViT-like encoder), standardised per channel on the training split, then projected to the
// model size and normalised:  m = LN_img(a W_img + b_img + E_img)   ([P, D]; E_img: learned position
// embeddings of the P image positions, or none), dropout on m when training.
// Words. x_0 = sqrt(D) E[y_t] + PE_t  (E: the word embedding [V, D]; PE: sinusoidal, or a learned table of
// maxLength rows), dropout. Then `layers` pre-LN blocks (Xiong et al. 2020):
//   x = x + drop(SelfAttention(LN_1(x)))          causal: position t sees positions 0..t
//   x = x + drop(CrossAttention(LN_2(x), m))      every position sees all P image positions
//   x = x + drop(W_2 drop(relu(W_1 LN_3(x) + b_1)) + b_2)
// and p(y_{t+1}) = softmax(LN_f(x) W_out + b_out), W_out = E^T when the embeddings are tied.
// Multi-head attention: heads H, head size K = D / H; queries, keys and values from one fused kernel
// ([D, 3D] for self-attention, [D, D] + [D, 2D] for the cross-attention's query and key/value), columns
// part-major then head-major (column = part * D + head * K + k); softmax(q k^T / sqrt(K)) v per head,
// heads concatenated and projected by [D, D].
//
// Why pre-LN. With the normalisation inside the residual branch the gradients at initialisation are well
// scaled at every depth, so the stack trains with Adam at a constant learning rate, without the warm-up
// that post-LN Transformers need to avoid diverging early (Xiong et al. 2020, "On Layer Normalization in
// the Transformer Architecture"); this trainer has no warm-up. The price is the one extra LayerNorm (LN_f).
//
// Training is teacher forcing over whole captions in one pass (the causal mask hides later words); the
// loss is the mean next-word cross-entropy over the real target tokens (ops.ts softmaxCrossEntropy, the
// fused chunked output layer the other decoders use). Decoding (initState/step) projects each image's
// keys and values for every layer's cross-attention once (state memory/<l>/k|v [N, H, P, K]) and caches
// every layer's self-attention keys and values of the words so far (self/<l>/k|v [N, H, t, K], absent
// before the first word), so a step computes only the new position. Attention maps (`attention` [N, P]):
// the LAST layer's cross-attention weights averaged over its heads: the layer whose output the word is
// read from (averaging over layers would mix in the lower layers' more diffuse maps).
// Shapes: N sequences (B in a batch), T steps, P image positions, C channels, D modelDim, H heads,
// K = D / H, F ffnDim, V vocabSize.
import { tf } from '../../tf/tf.js';
import { ModelError } from '../../errors.js';
import { rng } from '../../util/random.js';
import { glorot, normal, torchLinear, type InitScheme } from '../spec.js';
import { gatherRows, softmaxCrossEntropy } from '../ops.js';
import { checkBatch, computeFeatureNorm, identityNorm } from './batch.js';
import { readVariables, weightVariables } from './weights.js';
import type {
  CaptionBatch,
  Decoder,
  DecoderKind,
  DecoderState,
  FeatureNorm,
  LossOptions,
  LossTerms,
  StepResult,
} from './types.js';

export type PositionEncoding = 'sinusoidal' | 'learned';
export type ImagePositions = 'learned' | 'none';

/**
 * Token positions a transformer knows (rows of the position table): the largest prep.maxLength and
 * decode.maxLength the config schema accepts, so no accepted setting can step past it.
 */
export const TRANSFORMER_MAX_LENGTH = 200;

/** LayerNorm epsilon (PyTorch's default). */
export const LAYER_NORM_EPSILON = 1e-5;

export interface TransformerSpec {
  /** Vocabulary size (index 0 is <pad>). */
  vocabSize: number;
  /** Image positions P (grid cells or tokens). */
  positions: number;
  /** Channels C per image position. */
  channels: number;
  layers: number;
  heads: number;
  /** Model size D (embedding, attention and residual width); a multiple of heads. */
  modelDim: number;
  /** Hidden width F of each feed-forward block. */
  ffnDim: number;
  dropout: number;
  positionEncoding: PositionEncoding;
  imagePositions: ImagePositions;
  /** Output layer W_out = embedding^T (no separate output kernel). */
  tieEmbeddings: boolean;
  /** Token positions known (rows of the position table; TRANSFORMER_MAX_LENGTH). */
  maxLength: number;
}

/** What the transformer reads from the model config section (model.transformer laid over model). */
export interface TransformerConfig {
  units: number;
  dropout: number;
  layers: number;
  heads: number;
  /** Default: units. */
  modelDim?: number;
  /** Default: 4 x modelDim. */
  ffnDim?: number;
  positionEncoding: PositionEncoding;
  imagePositions: ImagePositions;
  tieEmbeddings: boolean;
}

/** Every weight of the transformer, in save order, with its shape. */
export function transformerWeightShapes(s: TransformerSpec): Record<string, number[]> {
  const { vocabSize: V, positions: P, channels: C, modelDim: D, ffnDim: F } = s;
  const out: Record<string, number[]> = { embedding: [V, D] };
  if (s.positionEncoding === 'learned') out['position'] = [s.maxLength, D];
  out['image/kernel'] = [C, D];
  out['image/bias'] = [D];
  if (s.imagePositions === 'learned') out['image/position'] = [P, D];
  out['image/norm/gamma'] = [D];
  out['image/norm/beta'] = [D];
  for (let l = 0; l < s.layers; l++) {
    const p = `layer${l}/`;
    Object.assign(out, {
      [`${p}self/norm/gamma`]: [D],
      [`${p}self/norm/beta`]: [D],
      [`${p}self/qkv/kernel`]: [D, 3 * D],
      [`${p}self/qkv/bias`]: [3 * D],
      [`${p}self/output/kernel`]: [D, D],
      [`${p}self/output/bias`]: [D],
      [`${p}cross/norm/gamma`]: [D],
      [`${p}cross/norm/beta`]: [D],
      [`${p}cross/query/kernel`]: [D, D],
      [`${p}cross/query/bias`]: [D],
      [`${p}cross/kv/kernel`]: [D, 2 * D],
      [`${p}cross/kv/bias`]: [2 * D],
      [`${p}cross/output/kernel`]: [D, D],
      [`${p}cross/output/bias`]: [D],
      [`${p}ffn/norm/gamma`]: [D],
      [`${p}ffn/norm/beta`]: [D],
      [`${p}ffn/hidden/kernel`]: [D, F],
      [`${p}ffn/hidden/bias`]: [F],
      [`${p}ffn/output/kernel`]: [F, D],
      [`${p}ffn/output/bias`]: [D],
    });
  }
  out['final/norm/gamma'] = [D];
  out['final/norm/beta'] = [D];
  if (!s.tieEmbeddings) out['output/kernel'] = [D, V];
  out['output/bias'] = [V];
  return out;
}

export function validateTransformerSpec(s: TransformerSpec): void {
  if (!s || typeof s !== 'object') throw new ModelError('model: the transformer spec is missing');
  for (const k of [
    'vocabSize',
    'positions',
    'channels',
    'layers',
    'heads',
    'modelDim',
    'ffnDim',
    'maxLength',
  ] as const) {
    if (!Number.isInteger(s[k]) || s[k] <= 0)
      throw new ModelError(`model: ${k} must be a positive integer, got ${s[k]}`);
  }
  if (s.vocabSize < 4)
    throw new ModelError(`model: vocabulary of ${s.vocabSize} tokens is too small (needs <pad>, <unk>, start, end)`);
  if (s.modelDim % s.heads !== 0)
    throw new ModelError(
      `model: the transformer's model size (${s.modelDim}) must be a multiple of its heads (${s.heads}); set model.transformer.modelDim or model.transformer.heads`,
    );
  if (!(s.dropout >= 0 && s.dropout < 1)) throw new ModelError(`model: dropout must be in [0, 1), got ${s.dropout}`);
  if (s.positionEncoding !== 'sinusoidal' && s.positionEncoding !== 'learned')
    throw new ModelError(
      `model: positionEncoding must be sinusoidal or learned, got ${JSON.stringify(s.positionEncoding)}`,
    );
  if (s.imagePositions !== 'learned' && s.imagePositions !== 'none')
    throw new ModelError(`model: imagePositions must be learned or none, got ${JSON.stringify(s.imagePositions)}`);
  if (typeof s.tieEmbeddings !== 'boolean')
    throw new ModelError(`model: tieEmbeddings must be true or false, got ${JSON.stringify(s.tieEmbeddings)}`);
}

export function transformerSpecFromConfig(
  m: TransformerConfig,
  vocabSize: number,
  featureShape: readonly number[],
): TransformerSpec {
  if (featureShape.length !== 2) {
    throw new ModelError(
      `model: the transformer decoder needs grid or token features [positions, channels], got shape [${featureShape.join(', ')}] (run \`captioner features\` with encoder.layer block5_conv3 or block5_pool)`,
    );
  }
  const modelDim = m.modelDim ?? m.units;
  const s: TransformerSpec = {
    vocabSize,
    positions: featureShape[0],
    channels: featureShape[1],
    layers: m.layers,
    heads: m.heads,
    modelDim,
    ffnDim: m.ffnDim ?? 4 * modelDim,
    dropout: m.dropout,
    positionEncoding: m.positionEncoding,
    imagePositions: m.imagePositions,
    tieEmbeddings: m.tieEmbeddings,
    maxLength: TRANSFORMER_MAX_LENGTH,
  };
  validateTransformerSpec(s);
  return s;
}

/**
 * Seeded initial values. Both schemes: LayerNorm gain 1 and shift 0; the word embedding from N(0, 1/D), so
 * that sqrt(D) E y has unit variance and tied output logits start near unit scale; learned position tables
 * (words and image) from N(0, 1/2), the sinusoids' mean square. 'keras': glorot-uniform kernels (the fused
 * query/key/value kernels drawn as their [D, D] parts would be), zero biases. 'torch': every kernel and bias
 * as nn.Linear's default, uniform in +-1/sqrt(fan-in) (the embedding keeps its scale: PyTorch's N(0, 1)
 * times sqrt(D) would start the residual stream, and tied logits, sqrt(D) times too large).
 */
export function transformerInitialWeights(
  s: TransformerSpec,
  seed: number,
  init: InitScheme = 'keras',
): Record<string, Float32Array> {
  const r = rng(seed);
  const D = s.modelDim;
  const shapes = transformerWeightShapes(s);
  const out: Record<string, Float32Array> = {};
  for (const [name, shape] of Object.entries(shapes)) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (name.endsWith('/gamma')) out[name] = new Float32Array(n).fill(1);
    else if (name.endsWith('/beta')) out[name] = new Float32Array(n);
    else if (name === 'embedding') out[name] = normal(r, 1 / Math.sqrt(D), n);
    else if (name === 'position' || name === 'image/position') out[name] = normal(r, Math.SQRT1_2, n);
    else if (init === 'torch') {
      // a bias's fan-in is its kernel's (the tied output layer's: D)
      const fanIn = name.endsWith('bias') ? (shapes[name.replace(/bias$/, 'kernel')]?.[0] ?? D) : shape[0];
      out[name] = torchLinear(r, fanIn, n);
    } else if (name.endsWith('bias')) out[name] = new Float32Array(n);
    else if (name.endsWith('qkv/kernel') || name.endsWith('kv/kernel')) out[name] = glorot(r, D, D, n);
    else out[name] = glorot(r, shape[0], shape[1], n);
  }
  return out;
}

/** The sinusoidal table [rows, D]: PE[t, 2i] = sin(t / 10000^(2i/D)), PE[t, 2i+1] = cos(t / 10000^(2i/D)). */
export function sinusoidalPositions(rows: number, D: number): Float32Array {
  const out = new Float32Array(rows * D);
  for (let t = 0; t < rows; t++) {
    for (let i = 0; i < D; i += 2) {
      const angle = t / Math.pow(10000, i / D);
      out[t * D + i] = Math.sin(angle);
      if (i + 1 < D) out[t * D + i + 1] = Math.cos(angle);
    }
  }
  return out;
}

/**
 * LayerNorm over the last axis of rows x [M, D]: (x - mean) / sqrt(var + eps) * gamma + beta (population
 * variance), as one op with its own gradient: dx = rstd (g - mean(g) - xhat mean(g xhat)) with g = dy gamma,
 * dgamma = sum(dy xhat), dbeta = sum(dy). Autograd through the plain ops would keep and revisit about twice
 * as many [M, D] tensors (tf.mean's gradient alone builds three).
 */
function layerNorm(x: tf.Tensor2D, gamma: tf.Tensor, beta: tf.Tensor): tf.Tensor2D {
  const f = tf.customGrad(((xx: tf.Tensor, g: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
    const centred = tf.sub(xx, tf.mean(xx, -1, true)); // [M, D]
    const rstd = tf.rsqrt(tf.add(tf.mean(tf.square(centred), -1, true), LAYER_NORM_EPSILON)); // [M, 1]
    const xhat = tf.mul(centred, rstd); // [M, D]
    save([xhat, rstd, g]);
    return {
      value: tf.add(tf.mul(xhat, g), b),
      gradFunc: (dy: tf.Tensor, [xh, rs, gg]: tf.Tensor[]) => {
        const gy = tf.mul(dy, gg); // [M, D]
        const dx = tf.mul(tf.sub(tf.sub(gy, tf.mean(gy, -1, true)), tf.mul(xh, tf.mean(tf.mul(gy, xh), -1, true))), rs);
        return [dx, tf.sum(tf.mul(dy, xh), 0), tf.sum(dy, 0)];
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return f(x, gamma, beta) as tf.Tensor2D;
}

/** x [M, I] W [I, O] + b [O]. */
function linear(x: tf.Tensor2D, kernel: tf.Tensor, bias: tf.Tensor): tf.Tensor2D {
  return tf.add(tf.matMul(x, kernel as tf.Tensor2D), bias) as tf.Tensor2D;
}

/**
 * The `parts` projections of rows x [N * S, I] by a fused kernel [I, parts * D] and bias [parts * D]
 * (column part * D + head * K + k), each as [N * H, S, K], heads split out. Each part multiplies by its own
 * slice of the kernel: slicing the small kernel is cheaper than splitting the large product.
 */
function projectHeads(
  x: tf.Tensor2D,
  kernel: tf.Tensor,
  bias: tf.Tensor,
  N: number,
  S: number,
  H: number,
  parts: number,
): tf.Tensor3D[] {
  const [I, PD] = kernel.shape as [number, number];
  const D = PD / parts;
  const K = D / H;
  return Array.from({ length: parts }, (_, p) => {
    const k = parts === 1 ? kernel : tf.slice(kernel, [0, p * D], [I, D]);
    const b = parts === 1 ? bias : tf.slice(bias, [p * D], [D]);
    const y = linear(x, k, b); // [N*S, D]
    return tf.reshape(tf.transpose(tf.reshape(y, [N, S, H, K]), [0, 2, 1, 3]), [N * H, S, K]) as tf.Tensor3D;
  });
}

/** [N * H, S, K] per-head outputs -> [N * S, D] rows, heads concatenated. */
function mergeHeads(x: tf.Tensor3D, N: number, H: number): tf.Tensor2D {
  const [, S, K] = x.shape;
  return tf.reshape(tf.transpose(tf.reshape(x, [N, H, S, K]), [0, 2, 1, 3]), [N * S, H * K]) as tf.Tensor2D;
}

/**
 * Scaled dot-product attention per head: q [NH, Tq, K], k and v [NH, Tk, K], mask [Tq, Tk] (0 or -1e9,
 * added to the scores) -> outputs [NH, Tq, K] and weights [NH, Tq, Tk].
 */
function attend(
  q: tf.Tensor3D,
  k: tf.Tensor3D,
  v: tf.Tensor3D,
  mask?: tf.Tensor2D,
): { out: tf.Tensor3D; weights: tf.Tensor3D } {
  const K = q.shape[2];
  let scores: tf.Tensor = tf.matMul(tf.mul(q, 1 / Math.sqrt(K)), k, false, true); // [NH, Tq, Tk]
  if (mask) scores = tf.add(scores, mask);
  const weights = tf.softmax(scores) as tf.Tensor3D;
  return { out: tf.matMul(weights, v) as tf.Tensor3D, weights };
}

/** The causal mask [T, T]: 0 where column <= row, -1e9 above the diagonal (later words). */
function causalMask(T: number): tf.Tensor2D {
  const m = new Float32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) m[i * T + j] = -1e9;
  return tf.tensor2d(m, [T, T]);
}

/** The one-step state: every tensor's first dimension is N. */
export type TransformerState = DecoderState;

export class TransformerDecoder implements Decoder {
  readonly type = 'transformer';
  readonly spec: TransformerSpec;
  readonly featureShape: readonly number[];
  readonly weights: Record<string, tf.Variable>;
  readonly norm: FeatureNorm;
  private readonly normMean: tf.Tensor1D; // [C]
  private readonly normScale: tf.Tensor1D; // [C], 1 / std
  private readonly sinusoids: tf.Tensor2D | null; // [maxLength, D], sinusoidal encoding only
  private disposed = false;

  constructor(spec: TransformerSpec, values: Record<string, Float32Array>, norm: FeatureNorm) {
    validateTransformerSpec(spec);
    this.spec = spec;
    this.featureShape = [spec.positions, spec.channels];
    if (norm.mean.length !== spec.channels || norm.std.length !== spec.channels) {
      throw new ModelError(
        `feature normalisation has ${norm.mean.length} channels, the model expects ${spec.channels}`,
      );
    }
    this.weights = weightVariables(transformerWeightShapes(spec), values, 'transformer');
    this.norm = norm;
    this.normMean = tf.tensor1d(norm.mean);
    this.normScale = tf.tensor1d(norm.std.map((s) => 1 / s));
    this.sinusoids =
      spec.positionEncoding === 'sinusoidal'
        ? tf.tensor2d(sinusoidalPositions(spec.maxLength, spec.modelDim), [spec.maxLength, spec.modelDim])
        : null;
  }

  /** A freshly initialised model (seeded); identity normalisation unless `norm` is given. */
  static create(spec: TransformerSpec, seed: number, norm?: FeatureNorm): TransformerDecoder {
    const n = norm ?? identityNorm(spec.channels);
    return new TransformerDecoder(spec, transformerInitialWeights(spec, seed), n);
  }

  get variables(): tf.Variable[] {
    return Object.values(this.weights);
  }

  readWeights(): Promise<Record<string, Float32Array>> {
    return readVariables(this.weights);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    tf.dispose([...this.variables, this.normMean, this.normScale, ...(this.sinusoids ? [this.sinusoids] : [])]);
  }

  // ---------------------------------------------------------------- shared pieces

  /** Position encodings of positions from..from+count-1: [count, D]. */
  private positionRows(from: number, count: number): tf.Tensor2D {
    const table = this.sinusoids ?? (this.weights['position'] as tf.Tensor2D);
    return tf.slice(table, [from, 0], [count, this.spec.modelDim]);
  }

  /** Dropout when training (a distinct seed per call site: seed + site). */
  private drop(x: tf.Tensor, training: boolean, seed: number): tf.Tensor {
    return training && this.spec.dropout > 0 ? tf.dropout(x, this.spec.dropout, undefined, seed) : x;
  }

  /** Raw features [N, P*C] -> the image memory m [N*P, D] (rows n*P + p). */
  private memory(x: tf.Tensor2D, training: boolean, seed: number): tf.Tensor2D {
    const { positions: P, channels: C, modelDim: D } = this.spec;
    const w = this.weights;
    const N = x.shape[0];
    const a = tf.mul(tf.sub(tf.reshape(x, [N * P, C]), this.normMean), this.normScale) as tf.Tensor2D; // [N*P, C]
    let m: tf.Tensor = linear(a, w['image/kernel'], w['image/bias']); // [N*P, D]
    if (this.spec.imagePositions === 'learned')
      m = tf.reshape(tf.add(tf.reshape(m, [N, P, D]), w['image/position']), [N * P, D]);
    m = layerNorm(m as tf.Tensor2D, w['image/norm/gamma'], w['image/norm/beta']);
    return this.drop(m, training, seed) as tf.Tensor2D;
  }

  /** Layer l's cross-attention keys and values of the memory [N*P, D]: two [N*H, P, K]. */
  private memoryKeys(m: tf.Tensor2D, l: number, N: number): [tf.Tensor3D, tf.Tensor3D] {
    const w = this.weights;
    const [k, v] = projectHeads(
      m,
      w[`layer${l}/cross/kv/kernel`],
      w[`layer${l}/cross/kv/bias`],
      N,
      this.spec.positions,
      this.spec.heads,
      2,
    );
    return [k, v];
  }

  /** The word inputs sqrt(D) E y_t + PE_t for tokens [N*S] at positions from..from+S-1 -> [N*S, D]. */
  private embed(ids: Int32Array, N: number, S: number, from: number, training: boolean, seed: number): tf.Tensor2D {
    const D = this.spec.modelDim;
    const e = tf.mul(gatherRows(this.weights['embedding'] as tf.Tensor2D, ids), Math.sqrt(D)); // [N*S, D]
    const x = tf.reshape(tf.add(tf.reshape(e, [N, S, D]), this.positionRows(from, S)), [N * S, D]);
    return this.drop(x, training, seed) as tf.Tensor2D;
  }

  /** The feed-forward sublayer's residual branch on rows [M, D]. */
  private ffn(x: tf.Tensor2D, l: number, training: boolean, seed: number): tf.Tensor2D {
    const w = this.weights;
    const p = `layer${l}/ffn/`;
    const h = linear(
      layerNorm(x, w[`${p}norm/gamma`], w[`${p}norm/beta`]) as tf.Tensor2D,
      w[`${p}hidden/kernel`],
      w[`${p}hidden/bias`],
    ); // [M, F]
    const f = this.drop(tf.relu(h), training, seed) as tf.Tensor2D;
    return this.drop(linear(f, w[`${p}output/kernel`], w[`${p}output/bias`]), training, seed + 1) as tf.Tensor2D; // [M, D]
  }

  /** The output layer's kernel [D, V]: the embedding transposed when tied. */
  private outputKernel(): tf.Tensor2D {
    return this.spec.tieEmbeddings
      ? (tf.transpose(this.weights['embedding']) as tf.Tensor2D)
      : (this.weights['output/kernel'] as tf.Tensor2D);
  }

  /**
   * Teacher forcing over whole captions in one pass: the last block's output x [B*T, D] (row b*T + t, before
   * LN_f) and, when asked, the last layer's cross-attention averaged over heads [B, T, P].
   */
  private trunk(
    batch: CaptionBatch,
    training: boolean,
    seed: number,
    withAttention = false,
  ): { x: tf.Tensor2D; attention?: tf.Tensor3D } {
    const { size: B, steps: T } = batch;
    const { positions: P, channels: C, heads: H, layers: L } = this.spec;
    const w = this.weights;
    const mem = this.memory(tf.tensor2d(batch.images, [B, P * C]), training, seed); // [B*P, D]
    let x = this.embed(batch.inputs, B, T, 0, training, seed + 1); // [B*T, D]
    const mask = causalMask(T);
    let attention: tf.Tensor3D | undefined;
    for (let l = 0; l < L; l++) {
      const p = `layer${l}/`;
      const s = seed + 10 * (l + 1);
      // masked self-attention
      const hs = layerNorm(x, w[`${p}self/norm/gamma`], w[`${p}self/norm/beta`]) as tf.Tensor2D;
      const [q, k, v] = projectHeads(hs, w[`${p}self/qkv/kernel`], w[`${p}self/qkv/bias`], B, T, H, 3); // 3 x [B*H, T, K]
      const self = attend(q, k, v, mask).out;
      x = tf.add(
        x,
        this.drop(linear(mergeHeads(self, B, H), w[`${p}self/output/kernel`], w[`${p}self/output/bias`]), training, s),
      ) as tf.Tensor2D;
      // cross-attention over the image
      const hc = layerNorm(x, w[`${p}cross/norm/gamma`], w[`${p}cross/norm/beta`]) as tf.Tensor2D;
      const [qc] = projectHeads(hc, w[`${p}cross/query/kernel`], w[`${p}cross/query/bias`], B, T, H, 1); // [B*H, T, K]
      const [mk, mv] = this.memoryKeys(mem, l, B); // [B*H, P, K] each
      const cross = attend(qc, mk, mv);
      if (withAttention && l === L - 1) attention = tf.mean(tf.reshape(cross.weights, [B, H, T, P]), 1) as tf.Tensor3D; // [B, T, P]
      x = tf.add(
        x,
        this.drop(
          linear(mergeHeads(cross.out, B, H), w[`${p}cross/output/kernel`], w[`${p}cross/output/bias`]),
          training,
          s + 1,
        ),
      ) as tf.Tensor2D;
      // feed-forward
      x = tf.add(x, this.ffn(x, l, training, s + 2)) as tf.Tensor2D;
    }
    return { x, ...(attention ? { attention } : {}) };
  }

  /** LN_f then the output logits [M, V] of rows [M, D]. */
  private logits(x: tf.Tensor2D): tf.Tensor2D {
    const w = this.weights;
    const y = layerNorm(x, w['final/norm/gamma'], w['final/norm/beta']) as tf.Tensor2D;
    return tf.add(tf.matMul(y, this.outputKernel()), w['output/bias']) as tf.Tensor2D;
  }

  /** The transformer's objective has one term: the loss is the cross-entropy. */
  lossTerms(batch: CaptionBatch, opts: LossOptions): LossTerms {
    return { crossEntropy: this.loss(batch, opts) };
  }

  /**
   * Mean next-word cross-entropy over the real target tokens of a batch. With `training` (dropout on, the
   * fused gradient of the output layer attached) call it inside tf.variableGrads.
   */
  loss(batch: CaptionBatch, opts: LossOptions): tf.Scalar {
    checkTransformerBatch(batch, this.spec);
    return tf.tidy(() => {
      const w = this.weights;
      const { x } = this.trunk(batch, opts.training, opts.seed ?? 0);
      // only the positions with a real target go through LN_f and the (expensive) output layer
      const y = layerNorm(gatherRows(x, batch.positions), w['final/norm/gamma'], w['final/norm/beta']) as tf.Tensor2D; // [M, D]
      return softmaxCrossEntropy(
        y,
        this.outputKernel(),
        w['output/bias'] as tf.Tensor1D,
        batch.targets,
        opts.training,
        opts.chunkBudget,
        opts.labelSmoothing,
      );
    });
  }

  logProbsAll(batch: CaptionBatch): tf.Tensor3D {
    checkTransformerBatch(batch, this.spec);
    return tf.tidy(() => {
      const { x } = this.trunk(batch, false, 0);
      return tf.reshape(tf.logSoftmax(this.logits(x)), [batch.size, batch.steps, this.spec.vocabSize]) as tf.Tensor3D;
    });
  }

  /** The last layer's cross-attention averaged over heads [B, T, P] of the teacher-forced pass (no dropout). */
  attentionAll(batch: CaptionBatch): tf.Tensor3D {
    checkTransformerBatch(batch, this.spec);
    return tf.tidy(() => this.trunk(batch, false, 0, true).attention!);
  }

  // ---------------------------------------------------------------- one-step decoding

  /** Start states for N images: every layer's cross-attention keys and values [N, H, P, K]; no words yet. */
  initState(features: Float32Array[] | tf.Tensor2D): TransformerState {
    const { positions: P, channels: C, heads: H, modelDim: D } = this.spec;
    const size = P * C;
    return tf.tidy(() => {
      let x: tf.Tensor2D;
      if (features instanceof tf.Tensor) {
        if (features.rank !== 2 || features.shape[1] !== size)
          throw new ModelError(
            `image features have shape [${features.shape.join(', ')}], the model expects [N, ${size}] (${P} positions x ${C} channels)`,
          );
        x = features;
      } else {
        const flat = new Float32Array(features.length * size);
        features.forEach((v, i) => {
          if (v.length !== size)
            throw new ModelError(
              `image feature ${i} has ${v.length} values, the model expects ${size} (${P} positions x ${C} channels)`,
            );
          flat.set(v, i * size);
        });
        x = tf.tensor2d(flat, [features.length, size]);
      }
      const N = x.shape[0];
      const mem = this.memory(x, false, 0);
      const state: TransformerState = {};
      for (let l = 0; l < this.spec.layers; l++) {
        const [k, v] = this.memoryKeys(mem, l, N);
        state[`memory/${l}/k`] = tf.reshape(k, [N, H, P, D / H]);
        state[`memory/${l}/v`] = tf.reshape(v, [N, H, P, D / H]);
      }
      return state;
    });
  }

  /** Words consumed so far by `state` (0 before the first), after checking it is a whole transformer state. */
  private stateStep(st: TransformerState): number {
    const { layers: L, heads: H, positions: P, modelDim: D } = this.spec;
    const K = D / H;
    const t = st['self/0/k'] instanceof tf.Tensor ? (st['self/0/k'].shape[2] ?? 0) : 0;
    for (let l = 0; l < L; l++) {
      for (const part of ['k', 'v']) {
        const m = st[`memory/${l}/${part}`];
        if (!(m instanceof tf.Tensor))
          throw new ModelError(
            `step: the state has no "memory/${l}/${part}" (not a transformer decoder state, or one of another depth)`,
          );
        if (m.rank !== 4 || m.shape[1] !== H || m.shape[2] !== P || m.shape[3] !== K)
          throw new ModelError(
            `step: "memory/${l}/${part}" has shape [${m.shape.join(', ')}], expected [N, ${H}, ${P}, ${K}]`,
          );
        const c = st[`self/${l}/${part}`];
        if (
          t === 0
            ? c !== undefined
            : !(c instanceof tf.Tensor && c.rank === 4 && c.shape[1] === H && c.shape[2] === t && c.shape[3] === K)
        ) {
          throw new ModelError(
            `step: the state's cached keys and values disagree about the words so far ("self/${l}/${part}")`,
          );
        }
      }
    }
    return t;
  }

  step(state: DecoderState, tokens: ArrayLike<number>, opts: { attention?: boolean } = {}): StepResult {
    const st = state as TransformerState;
    const t = this.stateStep(st);
    const { heads: H, positions: P, modelDim: D, layers: L, maxLength } = this.spec;
    const K = D / H;
    const N = st['memory/0/k'].shape[0];
    if (tokens.length !== N) throw new ModelError(`step: ${tokens.length} tokens for ${N} sequences`);
    if (t >= maxLength)
      throw new ModelError(
        `step: the transformer knows ${maxLength} token positions; position ${t + 1} is past them (lower decode.maxLength)`,
      );
    const ids = Int32Array.from(tokens);
    for (const id of ids)
      if (id < 0 || id >= this.spec.vocabSize)
        throw new ModelError(`step: token ${id} outside the vocabulary (0..${this.spec.vocabSize - 1})`);
    return tf.tidy(() => {
      const w = this.weights;
      const next: TransformerState = {};
      let x = this.embed(ids, N, 1, t, false, 0); // [N, D]
      let attention: tf.Tensor2D | undefined;
      for (let l = 0; l < L; l++) {
        const p = `layer${l}/`;
        // self-attention over the cached words and this one
        const hs = layerNorm(x, w[`${p}self/norm/gamma`], w[`${p}self/norm/beta`]) as tf.Tensor2D;
        const [q, k, v] = projectHeads(hs, w[`${p}self/qkv/kernel`], w[`${p}self/qkv/bias`], N, 1, H, 3).map((t) =>
          tf.reshape(t, [N, H, 1, K]),
        ); // 3 x [N, H, 1, K]
        const keys = t === 0 ? k : tf.concat([st[`self/${l}/k`], k], 2); // [N, H, t+1, K]
        const values = t === 0 ? v : tf.concat([st[`self/${l}/v`], v], 2);
        next[`self/${l}/k`] = keys;
        next[`self/${l}/v`] = values;
        const self = attend(
          tf.reshape(q, [N * H, 1, K]),
          tf.reshape(keys, [N * H, t + 1, K]),
          tf.reshape(values, [N * H, t + 1, K]),
        ).out; // [N*H, 1, K]
        x = tf.add(
          x,
          linear(tf.reshape(self, [N, D]) as tf.Tensor2D, w[`${p}self/output/kernel`], w[`${p}self/output/bias`]),
        ) as tf.Tensor2D;
        // cross-attention over the image
        const hc = layerNorm(x, w[`${p}cross/norm/gamma`], w[`${p}cross/norm/beta`]) as tf.Tensor2D;
        const qc = tf.reshape(linear(hc, w[`${p}cross/query/kernel`], w[`${p}cross/query/bias`]), [N * H, 1, K]);
        const mk = st[`memory/${l}/k`];
        const mv = st[`memory/${l}/v`];
        const cross = attend(qc as tf.Tensor3D, tf.reshape(mk, [N * H, P, K]), tf.reshape(mv, [N * H, P, K])); // out [N*H, 1, K], weights [N*H, 1, P]
        if (opts.attention && l === L - 1) attention = tf.mean(tf.reshape(cross.weights, [N, H, P]), 1) as tf.Tensor2D; // [N, P]
        x = tf.add(
          x,
          linear(
            tf.reshape(cross.out, [N, D]) as tf.Tensor2D,
            w[`${p}cross/output/kernel`],
            w[`${p}cross/output/bias`],
          ),
        ) as tf.Tensor2D;
        next[`memory/${l}/k`] = tf.clone(mk);
        next[`memory/${l}/v`] = tf.clone(mv);
        x = tf.add(x, this.ffn(x, l, false, 0)) as tf.Tensor2D;
      }
      const out: StepResult = { logProbs: tf.logSoftmax(this.logits(x)) as tf.Tensor2D, state: next };
      if (attention) out.attention = attention;
      return out;
    });
  }
}

function checkTransformerBatch(b: CaptionBatch, s: TransformerSpec): void {
  checkBatch(b, s.positions * s.channels, `${s.positions} x ${s.channels}`);
  if (b.steps > s.maxLength)
    throw new ModelError(`batch: captions of ${b.steps} steps; the transformer knows ${s.maxLength} token positions`);
}

export const transformerKind: DecoderKind<TransformerSpec, TransformerConfig> = {
  type: 'transformer',
  features: 'grid',
  // measured (quick demo, 3 seeds): torch's dense layers train worse than glorot ones here (best validation
  // loss 0.79 against 0.66); see docs/models.md#the-training-recipe for smoothing and warm-up
  recipe: { init: 'keras', labelSmoothing: 0, warmupSteps: 0 },
  specFromConfig: transformerSpecFromConfig,
  validateSpec: validateTransformerSpec,
  weightShapes: transformerWeightShapes,
  initialWeights: transformerInitialWeights,
  normDim: (s) => s.channels,
  featureNorm: (s, vectors) => computeFeatureNorm(vectors, s.channels, s.positions),
  create: (spec, values, norm) => new TransformerDecoder(spec, values, norm),
};
