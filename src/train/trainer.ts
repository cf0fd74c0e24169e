// Cross-entropy training steps (the interface: ./step.ts): a Trainer takes a batch and a seed, computes the gradient
// of the decoder's whole objective (cross-entropy plus any regulariser) and applies one update of the one Adam
// (src/train/adam.ts). Two implementations, chosen by train.workers:
//   1: MainThreadTrainer (here): the decoder's own variables on the current backend (wasm, cpu, tfjs-node or
//      tfjs-node-gpu; weights, moments and gradients stay on it), Adam.apply on them;
//   2 or more: src/train/parallel/trainer.ts: worker threads on wasm compute the slices' gradients into shared
//      memory, which one reduction and Adam's host loop turn into the update.
// Both report the same figures and write the same optimizer checkpoint, so --resume works across them.
import { ModelError } from '../errors.js';
import { tf } from '../tf/tf.js';
import type { CaptionBatch } from '../model/decoders/batch.js';
import { Adam, byWeightName } from './adam.js';
import { threadCpuMs } from './parallel/cpu.js';
import { buildDecoder, checkTokens, featureSizeOf, type TrainableDecoder } from './parallel/replica.js';
import { createParallelTrainer, resolveWorkers } from './parallel/trainer.js';
import { TrainerBase, type StepResult, type Trainer, type TrainerOptions } from './step.js';

export type { StepResult, StepTimings, Trainer, TrainerOptions } from './step.js';

/** The trainer train.workers asks for: the main thread for 1, worker threads for more. */
export async function createTrainer(o: TrainerOptions): Promise<Trainer> {
  const n = resolveWorkers(o.workers);
  if (n === 1) return new MainThreadTrainer(o);
  const weights = o.weights ?? (o.model ? await readVariables(o.model.weights) : undefined);
  if (!weights) throw new Error('createTrainer: give the initial weights or the model');
  const { model: _, ...rest } = o;
  return createParallelTrainer({ ...rest, weights, workers: n });
}

async function readVariables(vars: Record<string, tf.Variable>): Promise<Record<string, Float32Array>> {
  const out: Record<string, Float32Array> = {};
  for (const [n, w] of Object.entries(vars)) out[n] = (await w.data()) as Float32Array;
  return out;
}

/** train.workers 1: the decoder's variables on the current backend, one Adam.apply per step. */
class MainThreadTrainer extends TrainerBase {
  readonly workers = 1;
  private readonly model: TrainableDecoder;
  private readonly owned: boolean;
  private readonly labelSmoothing: number;

  constructor(o: TrainerOptions) {
    if (!o.model && !o.weights) throw new Error('createTrainer: give the initial weights or the model');
    const model = o.model ?? buildDecoder(o.kind, o.spec, o.weights!, o.norm);
    super(
      new Adam(model.weights, {
        learningRate: o.learningRate,
        clipNorm: o.clipNorm,
        beta1: o.beta1,
        beta2: o.beta2,
        epsilon: o.epsilon,
      }),
      featureSizeOf(o.kind, o.spec),
      'training',
    );
    this.model = model;
    this.owned = !o.model;
    this.labelSmoothing = o.labelSmoothing ?? 0;
  }

  protected override checkBatch(batch: CaptionBatch): void {
    checkTokens(batch, this.model.spec.vocabSize); // the wasm gather does not check
  }

  protected async update(batch: CaptionBatch, seed: number): Promise<StepResult> {
    const c0 = threadCpuMs() ?? NaN;
    const t0 = performance.now();
    const model = this.model;
    let ce: tf.Scalar | null = null;
    let norm: tf.Scalar | null = null;
    const { value, grads } = tf.variableGrads(() => {
      const terms = model.lossTerms(batch, { training: true, seed, labelSmoothing: this.labelSmoothing });
      const rest = Object.entries(terms)
        .filter(([k]) => k !== 'crossEntropy')
        .map(([, t]) => t);
      if (!rest.length) return terms.crossEntropy;
      ce = tf.keep(terms.crossEntropy);
      return tf.addN([terms.crossEntropy, ...rest]) as tf.Scalar;
    }, model.variables);
    try {
      const t1 = performance.now();
      norm = this.adam.apply(byWeightName(model.weights, grads));
      const t2 = performance.now();
      // read after the update is queued: on a device backend these are the step's only syncs
      const total = (await value.data())[0];
      const loss = ce ? (await (ce as tf.Scalar).data())[0] : total;
      const n = (await norm.data())[0];
      const t3 = performance.now();
      return {
        loss,
        total,
        tokens: batch.targets.length,
        norm: n,
        ms: { load: 0, compute: t1 - t0, update: t2 - t1, cpu: (threadCpuMs() ?? NaN) - c0, total: t3 - t0 },
      };
    } finally {
      tf.dispose([value, ...Object.values(grads)]);
      if (ce) (ce as tf.Scalar).dispose();
      norm?.dispose();
    }
  }

  readWeights(): Promise<Record<string, Float32Array>> {
    return readVariables(this.model.weights);
  }

  copyTo(model: { weights: Record<string, tf.Variable> }): void {
    if (model === (this.model as unknown)) return;
    for (const [n, w] of Object.entries(this.model.weights)) {
      const to = model.weights[n];
      if (!to) throw new ModelError(`copyTo: the model has no weight "${n}"`);
      to.assign(w); // shares the (immutable) data
    }
  }

  protected async close(): Promise<void> {
    this.adam.dispose();
    if (this.owned) this.model.dispose();
  }
}
