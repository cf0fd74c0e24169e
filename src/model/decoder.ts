// The merge caption decoder (image Dense + word Embedding/LSTM, merged, Dense, softmax) written with plain
// tf ops over explicit weight variables. Training runs the LSTM over whole captions (teacher forcing) and
// predicts every next word at once; the one-step decoder (initState/step/gatherState) shares the weights
// and is what beam search drives.
import { tf } from '../tf/tf.js';
import { ModelError } from '../errors.js';
import { initialWeights, validateSpec, weightShapes, type DecoderSpec } from './spec.js';
import { gatherRows, softmaxCrossEntropy } from './ops.js';

/** Per-dimension standardisation of the image features, computed on the training features. */
export interface FeatureNorm {
  mean: Float32Array;
  std: Float32Array;
}

/** One-step decoder state for N sequences: LSTM state and the projected image, all on the backend. */
export interface DecoderState {
  h: tf.Tensor2D; // [N, U]
  c: tf.Tensor2D; // [N, U]
  image: tf.Tensor2D; // [N, imageUnits], after Dense + relu
}

/** A batch of whole captions, trimmed to the longest caption in the batch. */
export interface CaptionBatch {
  /** Batch size B. */
  size: number;
  /** Input steps T (longest caption length - 1). */
  steps: number;
  /** [B * D] image features (raw; the model standardises them). */
  images: Float32Array;
  /** [B * T] input tokens t[0..L-2], padded with 0. */
  inputs: Int32Array;
  /** Flat positions b * T + t whose target is a real token. */
  positions: Int32Array;
  /** Target token for each entry of `positions`. */
  targets: Int32Array;
}

let instance = 0;

/**
 * Per-dimension mean and std over the training features. Each std is floored at the mean std over all
 * dimensions: sparse features (random-VGG16 fc2 units that are almost always 0) otherwise get a tiny std,
 * and an unseen image that activates such a unit gets a z-score in the thousands, which wrecks
 * validation and captioning. Constant dimensions therefore also map to 0 without dividing by 0.
 */
export function computeFeatureNorm(vectors: Iterable<Float32Array>, dim: number): FeatureNorm {
  const sum = new Float64Array(dim);
  const sq = new Float64Array(dim);
  let n = 0;
  for (const v of vectors) {
    if (v.length !== dim) throw new ModelError(`feature vector of length ${v.length}, expected ${dim}`);
    for (let i = 0; i < dim; i++) {
      sum[i] += v[i];
      sq[i] += v[i] * v[i];
    }
    n++;
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

export class CaptionDecoder {
  readonly spec: DecoderSpec;
  /** Trainable weights by name (see weightShapes). */
  readonly weights: Record<string, tf.Variable>;
  private readonly normMean: tf.Tensor1D;
  private readonly normScale: tf.Tensor1D; // 1 / std
  readonly norm: FeatureNorm;
  private disposed = false;

  constructor(spec: DecoderSpec, values: Record<string, Float32Array>, norm: FeatureNorm) {
    validateSpec(spec);
    this.spec = spec;
    const shapes = weightShapes(spec);
    const id = instance++;
    this.weights = {};
    for (const [name, shape] of Object.entries(shapes)) {
      const v = values[name];
      const size = shape.reduce((a, b) => a * b, 1);
      if (!v) throw new ModelError(`weights: "${name}" is missing`);
      if (v.length !== size) throw new ModelError(`weights: "${name}" has ${v.length} values, expected ${size} (shape [${shape.join(', ')}])`);
      this.weights[name] = tf.tidy(() => tf.variable(tf.tensor(v, shape, 'float32'), true, `captioner${id}/${name}`));
    }
    if (norm.mean.length !== spec.featureDim || norm.std.length !== spec.featureDim) {
      throw new ModelError(`feature normalisation has ${norm.mean.length} dimensions, the model expects ${spec.featureDim}`);
    }
    this.norm = norm;
    this.normMean = tf.tensor1d(norm.mean);
    this.normScale = tf.tensor1d(norm.std.map((s) => 1 / s));
  }

  /** A freshly initialised model (seeded). */
  static create(spec: DecoderSpec, seed: number, norm?: FeatureNorm): CaptionDecoder {
    const n = norm ?? { mean: new Float32Array(spec.featureDim), std: new Float32Array(spec.featureDim).fill(1) };
    return new CaptionDecoder(spec, initialWeights(spec, seed), n);
  }

  get variables(): tf.Variable[] {
    return Object.values(this.weights);
  }

  /** Copy every weight to the host, by name. */
  async readWeights(): Promise<Record<string, Float32Array>> {
    const out: Record<string, Float32Array> = {};
    for (const [name, v] of Object.entries(this.weights)) out[name] = (await v.data()) as Float32Array;
    return out;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    tf.dispose([...this.variables, this.normMean, this.normScale]);
  }

  // ---------------------------------------------------------------- shared pieces

  private imageBranch(images: tf.Tensor2D, training: boolean, seed: number): tf.Tensor2D {
    const w = this.weights;
    let x: tf.Tensor = tf.mul(tf.sub(images, this.normMean), this.normScale); // [B, D]
    if (training && this.spec.dropout > 0) x = tf.dropout(x, this.spec.dropout, undefined, seed);
    return tf.relu(tf.add(tf.matMul(x as tf.Tensor2D, w['image/kernel']), w['image/bias'])) as tf.Tensor2D; // [B, I]
  }

  /** One LSTM cell update from precomputed input projections z_x [N, 4U]. */
  private cell(zx: tf.Tensor, h: tf.Tensor2D, c: tf.Tensor2D): [tf.Tensor2D, tf.Tensor2D] {
    const z = tf.add(zx, tf.matMul(h, this.weights['lstm/recurrent'])); // [N, 4U]
    const [zi, zf, zg, zo] = tf.split(z, 4, 1);
    const c2 = tf.add(tf.mul(tf.sigmoid(zf), c), tf.mul(tf.sigmoid(zi), tf.tanh(zg))) as tf.Tensor2D;
    const h2 = tf.mul(tf.sigmoid(zo), tf.tanh(c2)) as tf.Tensor2D;
    return [h2, c2];
  }

  /** Merge LSTM outputs [N, U] with image projections [N, I], then Dense + relu -> [N, hiddenUnits]. */
  private head(h: tf.Tensor2D, img: tf.Tensor2D): tf.Tensor2D {
    const m = this.spec.merge === 'add' ? tf.add(h, img) : tf.concat([h, img], 1);
    return tf.relu(tf.add(tf.matMul(m as tf.Tensor2D, this.weights['hidden/kernel']), this.weights['hidden/bias'])) as tf.Tensor2D;
  }

  /**
   * Hidden activations [B * T, hiddenUnits] for every input position (teacher forcing), row b * T + t.
   * One matmul projects all embeddings [B*T, E] x [E, 4U]; the recurrence then runs T cheap steps.
   */
  private trunk(batch: CaptionBatch, training: boolean, seed: number, positions?: Int32Array): tf.Tensor2D {
    const { size: B, steps: T } = batch;
    const s = this.spec;
    const w = this.weights;
    const img = this.imageBranch(tf.tensor2d(batch.images, [B, s.featureDim]), training, seed); // [B, I]
    let emb: tf.Tensor = gatherRows(w['embedding'] as tf.Tensor2D, batch.inputs); // [B*T, E]
    if (training && s.dropout > 0) emb = tf.dropout(emb, s.dropout, undefined, seed + 1);
    const zx = tf.reshape(tf.add(tf.matMul(emb as tf.Tensor2D, w['lstm/kernel']), w['lstm/bias']), [B, T, 4 * s.units]); // [B, T, 4U]
    const zs = tf.unstack(zx, 1); // T x [B, 4U]
    let h = tf.zeros([B, s.units]) as tf.Tensor2D;
    let c = tf.zeros([B, s.units]) as tf.Tensor2D;
    const hs: tf.Tensor2D[] = [];
    for (let t = 0; t < T; t++) {
      [h, c] = this.cell(zs[t], h, c);
      hs.push(h);
    }
    const hAll = tf.reshape(tf.stack(hs, 1), [B * T, s.units]); // [B*T, U]
    // the image projection is the same at every step: repeat each image row T times -> [B*T, I]
    const imgAll = tf.reshape(tf.tile(tf.expandDims(img, 1), [1, T, 1]), [B * T, s.imageUnits]);
    if (positions) {
      // only the positions with a real target go through the (expensive) output layers
      return this.head(gatherRows(hAll as tf.Tensor2D, positions), gatherRows(imgAll as tf.Tensor2D, positions));
    }
    return this.head(hAll as tf.Tensor2D, imgAll as tf.Tensor2D);
  }

  /**
   * Mean next-word cross-entropy over the real target tokens of a batch. With `training` (dropout on,
   * custom fused gradient attached) call it inside tf.variableGrads.
   */
  loss(batch: CaptionBatch, opts: { training: boolean; seed?: number; chunkBudget?: number }): tf.Scalar {
    checkBatch(batch, this.spec);
    return tf.tidy(() => {
      const hid = this.trunk(batch, opts.training, opts.seed ?? 0, batch.positions); // [P, H]
      return softmaxCrossEntropy(hid, this.weights['output/kernel'] as tf.Tensor2D, this.weights['output/bias'] as tf.Tensor1D, batch.targets, opts.training, opts.chunkBudget);
    });
  }

  /** Log-probabilities [B, T, V] at every input position, no dropout. For tests and small batches only. */
  logProbsAll(batch: CaptionBatch): tf.Tensor3D {
    checkBatch(batch, this.spec);
    return tf.tidy(() => {
      const hid = this.trunk(batch, false, 0);
      const logits = tf.add(tf.matMul(hid, this.weights['output/kernel']), this.weights['output/bias']);
      return tf.reshape(tf.logSoftmax(logits), [batch.size, batch.steps, this.spec.vocabSize]) as tf.Tensor3D;
    });
  }

  // ---------------------------------------------------------------- one-step decoding

  /** Start states for N images: zero LSTM state plus the projected image. `images`: N vectors or [N, D]. */
  initState(images: Float32Array[] | tf.Tensor2D): DecoderState {
    const D = this.spec.featureDim;
    return tf.tidy(() => {
      let x: tf.Tensor2D;
      if (images instanceof tf.Tensor) {
        if (images.shape[1] !== D) throw new ModelError(`image features have ${images.shape[1]} dimensions, the model expects ${D}`);
        x = images;
      } else {
        const flat = new Float32Array(images.length * D);
        images.forEach((v, i) => {
          if (v.length !== D) throw new ModelError(`image feature ${i} has ${v.length} dimensions, the model expects ${D}`);
          flat.set(v, i * D);
        });
        x = tf.tensor2d(flat, [images.length, D]);
      }
      const n = x.shape[0];
      const image = this.imageBranch(x, false, 0);
      return { h: tf.zeros([n, this.spec.units]) as tf.Tensor2D, c: tf.zeros([n, this.spec.units]) as tf.Tensor2D, image };
    });
  }

  /**
   * Feed one token per sequence; returns next-word log-probabilities [N, V] and the new state.
   * The input state is left alone (dispose it with disposeState when no longer needed).
   */
  step(state: DecoderState, tokens: ArrayLike<number>): { logProbs: tf.Tensor2D; state: DecoderState } {
    const n = state.h.shape[0];
    if (tokens.length !== n) throw new ModelError(`step: ${tokens.length} tokens for ${n} sequences`);
    const ids = Int32Array.from(tokens);
    for (const t of ids) if (t < 0 || t >= this.spec.vocabSize) throw new ModelError(`step: token ${t} outside the vocabulary (0..${this.spec.vocabSize - 1})`);
    return tf.tidy(() => {
      const w = this.weights;
      const e = tf.gather(w['embedding'], tf.tensor1d(ids, 'int32')) as tf.Tensor2D; // [N, E]
      const zx = tf.add(tf.matMul(e, w['lstm/kernel']), w['lstm/bias']); // [N, 4U]
      const [h, c] = this.cell(zx, state.h, state.c);
      const hid = this.head(h, state.image);
      const logits = tf.add(tf.matMul(hid, w['output/kernel']), w['output/bias']); // [N, V]
      const image = tf.clone(state.image);
      return { logProbs: tf.logSoftmax(logits) as tf.Tensor2D, state: { h, c, image } };
    });
  }

  /** The states of the sequences at `indices` (repeats allowed), e.g. to reorder beams. */
  gatherState(state: DecoderState, indices: ArrayLike<number>): DecoderState {
    return tf.tidy(() => {
      const idx = tf.tensor1d(Int32Array.from(indices), 'int32');
      return {
        h: tf.gather(state.h, idx) as tf.Tensor2D,
        c: tf.gather(state.c, idx) as tf.Tensor2D,
        image: tf.gather(state.image, idx) as tf.Tensor2D,
      };
    });
  }

  disposeState(state: DecoderState): void {
    tf.dispose([state.h, state.c, state.image]);
  }
}

function checkBatch(b: CaptionBatch, s: DecoderSpec): void {
  if (b.images.length !== b.size * s.featureDim) throw new ModelError(`batch: ${b.images.length} feature values for ${b.size} images of ${s.featureDim}`);
  if (b.inputs.length !== b.size * b.steps) throw new ModelError(`batch: ${b.inputs.length} input tokens, expected ${b.size} x ${b.steps}`);
  if (b.positions.length !== b.targets.length) throw new ModelError('batch: positions and targets differ in length');
  if (b.targets.length === 0) throw new ModelError('batch: no target tokens');
}

/** Build a batch from (feature vector, token sequence [start, ..., end]) pairs. */
export function makeBatch(items: { features: Float32Array; tokens: ArrayLike<number> }[], featureDim: number): CaptionBatch {
  const B = items.length;
  let maxLen = 2;
  for (const it of items) maxLen = Math.max(maxLen, it.tokens.length);
  const T = maxLen - 1;
  const images = new Float32Array(B * featureDim);
  const inputs = new Int32Array(B * T);
  const pos: number[] = [];
  const tgt: number[] = [];
  items.forEach((it, b) => {
    if (it.features.length !== featureDim) throw new ModelError(`feature vector of length ${it.features.length}, expected ${featureDim}`);
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
