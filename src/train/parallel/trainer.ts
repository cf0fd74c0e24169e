// Data-parallel training (config `train.workers` 2 or more; the Trainer of src/train/step.ts): N worker threads,
// each with its own wasm backend and a replica of the decoder, compute the gradients of their slices of every
// batch into shared memory; the slices' gradients are summed in worker order (./reduce.ts) and one update of
// the one Adam (src/train/adam.ts: factors from the main thread, its host loop over the shared weights and
// moments) is applied, either by the main thread ('main') or by the workers, each on its own partition of the
// weights ('partitioned'; the same bytes). Workers give their variables the shared weights at the start of each
// step (new tensors: never a write in place, see src/tf/copy.ts). Same seed and same number of workers give
// byte-identical weights.
import { availableParallelism } from 'node:os';
import { ConfigError } from '../../errors.js';
import { startWorkers, workerEntry, type RpcWorker } from '../../util/rpc.js';
import type { CaptionBatch } from '../../model/decoders/batch.js';
import type { tf } from '../../tf/tf.js';
import { mixSeed } from '../data.js';
import { Adam, adamArrays, type AdamFactors } from '../adam.js';
import { TrainerBase, type StepResult, type Trainer, type TrainerOptions } from '../step.js';
import { flatLayout, flatMoments, packWeights, partitionRanges, unpackWeights, type FlatLayout } from './flat.js';
import { normOf, reduceGradients } from './reduce.js';
import type { TrainWorkerApi, WorkerInit } from './protocol.js';
import {
  featureSizeOf,
  kindShapes,
  loadFlat,
  type SliceWeights,
  type ReplicaKind,
  type ReplicaSpec,
  type TrainableDecoder,
} from './replica.js';
import { splitBatch } from './split.js';
import { shareBlasThreads } from '../../tf/addon.js';

export type ParallelTrainerOptions = Omit<TrainerOptions, 'model' | 'weights'> & {
  weights: Record<string, Float32Array>;
};

/** The worker count `workers: auto | N` means on this machine. */
export function resolveWorkers(w: number | 'auto'): number {
  if (w === 'auto') return Math.max(1, availableParallelism());
  if (!Number.isInteger(w) || w < 1)
    throw new ConfigError(`train.workers: expected "auto" or a positive integer, got ${JSON.stringify(w)}`);
  return w;
}

/** Worker threads for `workers` 2 or more (src/train/trainer.ts createTrainer picks the main thread for 1). */
export async function createParallelTrainer(o: ParallelTrainerOptions): Promise<Trainer> {
  const n = resolveWorkers(o.workers);
  if (n < 2)
    throw new ConfigError(
      `parallel training needs 2 or more workers, got ${n} (createTrainer trains on the main thread for 1)`,
    );
  const layout = flatLayout(kindShapes(o.kind, o.spec));
  const shared = (floats: number) => new Float32Array(new SharedArrayBuffer(floats * 4));
  const weights = shared(layout.total);
  packWeights(layout, o.weights, weights);
  const grads = shared(layout.total * n);
  const m = shared(layout.total);
  const v = shared(layout.total);
  const adam = new Adam(flatMoments(layout, m, v), {
    learningRate: o.learningRate,
    clipNorm: o.clipNorm,
    beta1: o.beta1,
    beta2: o.beta2,
    epsilon: o.epsilon,
  });
  const engine = await workerEngine(o, n, layout, weights, grads, m, v);
  return new ParallelTrainer(n, o.update ?? 'partitioned', o.kind, o.spec, layout, adam, weights, grads, m, v, engine);
}

/** The workers: slice gradients into their regions, and range jobs of the update. */
interface Engine {
  grad(
    i: number,
    batch: CaptionBatch,
    weights: SliceWeights,
    seed: number,
  ): Promise<{ loss: number; total: number; load: number; compute: number; cpu: number }>;
  reduce(i: number, parts: number, from: number, to: number): Promise<Float64Array>;
  adam(i: number, factors: AdamFactors, from: number, to: number): Promise<void>;
  dispose(): Promise<void>;
}

class ParallelTrainer extends TrainerBase {
  constructor(
    readonly workers: number,
    private readonly mode: 'main' | 'partitioned',
    readonly kind: ReplicaKind,
    spec: ReplicaSpec,
    private readonly layout: FlatLayout,
    adam: Adam,
    private readonly weights: Float32Array,
    private readonly grads: Float32Array,
    private readonly m: Float32Array,
    private readonly v: Float32Array,
    private readonly engine: Engine,
  ) {
    super(adam, featureSizeOf(kind, spec), 'parallel training');
  }

  protected async update(batch: CaptionBatch, seed: number): Promise<StepResult> {
    const t0 = performance.now();
    const slices = splitBatch(batch, this.workers, this.featureSize);
    const res = await Promise.all(
      slices.map((s, i) => this.engine.grad(i, s.batch, { tokens: s.weight, rows: s.rowWeight }, mixSeed(seed, i))),
    );
    let loss = 0;
    let objective = 0;
    for (const r of res) {
      // weighted parts, in slice order
      loss += r.loss;
      objective += r.total;
    }
    const t1 = performance.now();
    const parts = slices.length;
    const total = this.layout.total;
    let norm: number;
    if (this.mode === 'partitioned') {
      const ranges = partitionRanges(total, this.workers);
      const blocks = await Promise.all(ranges.map(([a, b], i) => this.engine.reduce(i, parts, a, b)));
      norm = normOf(blocks.flatMap((x) => Array.from(x)));
      const f = this.adam.factors(norm);
      await Promise.all(ranges.map(([a, b], i) => this.engine.adam(i, f, a, b)));
    } else {
      norm = normOf(reduceGradients(this.grads, total, parts, 0, total));
      adamArrays(this.adam.factors(norm), this.weights, this.m, this.v, this.grads, 0, total);
    }
    this.adam.stepped();
    const t2 = performance.now();
    return {
      loss,
      total: objective,
      tokens: batch.targets.length,
      norm,
      ms: {
        load: Math.max(...res.map((r) => r.load)),
        compute: Math.max(...res.map((r) => r.compute)),
        cpu: Math.max(...res.map((r) => r.cpu)),
        update: t2 - t1,
        total: t2 - t0,
      },
    };
  }

  async readWeights(): Promise<Record<string, Float32Array>> {
    return unpackWeights(this.layout, this.weights);
  }

  copyTo(model: { weights: Record<string, tf.Variable> }): void {
    loadFlat(model as unknown as TrainableDecoder, this.layout, this.weights);
  }

  protected async close(): Promise<void> {
    // a step in flight is abandoned: its promise rejects (the workers exit) and the trainer stays unusable
    await this.engine.dispose();
  }
}

async function workerEngine(
  o: ParallelTrainerOptions,
  n: number,
  layout: FlatLayout,
  weights: Float32Array,
  grads: Float32Array,
  m: Float32Array,
  v: Float32Array,
): Promise<Engine> {
  const entry = workerEntry(import.meta.url, 'worker');
  const undoBlas = shareBlasThreads(n); // with the addon: each worker's products on its own thread (1 BLAS thread)
  const list = Array.from({ length: n }, (_, i) => {
    const data: WorkerInit = {
      index: i,
      kind: o.kind,
      spec: o.spec,
      norm: o.norm,
      labelSmoothing: o.labelSmoothing ?? 0,
      layout,
      weights: weights.buffer as SharedArrayBuffer,
      grads: grads.buffer as SharedArrayBuffer,
      m: m.buffer as SharedArrayBuffer,
      v: v.buffer as SharedArrayBuffer,
    };
    return { entry, data, label: `parallel training: worker ${i}` };
  });
  let workers: RpcWorker<TrainWorkerApi>[];
  try {
    workers = await startWorkers<TrainWorkerApi>(list);
  } catch (e) {
    undoBlas();
    throw e;
  }
  let closed: Promise<void> | undefined;
  const close = (reason: Error) =>
    (closed ??= (async () => {
      await Promise.all(workers.map((w) => w.terminate(reason)));
      undoBlas();
    })());
  // one worker dying ends them all: the step in flight fails with the crash, not with a hang
  for (const w of workers) void w.exited.then(({ crash }) => crash && close(crash));
  return {
    async grad(i, batch, sw, seed) {
      const r = await workers[i].call('grad', { batch, weights: sw, seed });
      return { loss: r.loss, total: r.total, load: r.ms.load ?? 0, compute: r.ms.compute ?? 0, cpu: r.ms.cpu ?? NaN };
    },
    async reduce(i, parts, from, to) {
      return (await workers[i].call('reduce', { parts, from, to })).blocks;
    },
    async adam(i, factors, from, to) {
      await workers[i].call('adam', { factors, from, to });
    },
    dispose: () => close(new Error('parallel training: the trainer was disposed during a step')),
  };
}
