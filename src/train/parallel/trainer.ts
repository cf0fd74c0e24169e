// Data-parallel training (config `train.workers`): N worker threads, each with its own wasm backend and a
// replica of the decoder, compute the gradients of their slices of every batch into shared memory; the
// slices' gradients are summed in worker order and one clipped Adam update (flat.ts) is applied to the
// shared weights, either by the main thread ('main') or by the workers, each on its own shard of the
// weights ('sharded'; the same bytes). Workers refresh their variables from the shared weights at the
// start of each step. `workers: 1` runs the same math in the main thread on the current backend.
// Same seed and same number of workers give byte-identical weights.
import { availableParallelism } from 'node:os';
import { ConfigError, ModelError } from '../../errors.js';
import { startWorkers, workerEntry, type RpcWorker } from '../../util/rpc.js';
import type { CaptionBatch, FeatureNorm } from '../../model/decoders/batch.js';
import type { NamedArray } from '../../model/io.js';
import type { tf } from '../../tf/tf.js';
import { mixSeed } from '../data.js';
import { adamFactors, flatLayout, loadMoments, momentArrays, normOf, packWeights, shardRanges, unpackWeights, type AdamHyper, type FlatLayout } from './flat.js';
import { applyAdam, reduceGradients } from './update.js';
import type { TrainWorkerApi, WorkerInit } from './protocol.js';
import { threadCpuMs } from './cpu.js';
import { buildDecoder, featureSizeOf, kindShapes, loadFlat, sliceGradient, type SliceWeights, type ReplicaKind, type ReplicaSpec, type TrainableDecoder } from './replica.js';
import { splitBatch } from './split.js';
import { shareBlasThreads } from '../../tf/native.js';

export interface ParallelTrainerOptions {
  kind: ReplicaKind;
  spec: ReplicaSpec;
  /** Initial weights by name (a fresh model's, or a checkpoint's). */
  weights: Record<string, Float32Array>;
  norm: FeatureNorm;
  /** 'auto': one per core (os.availableParallelism). */
  workers: number | 'auto';
  learningRate: number;
  clipNorm?: number;
  beta1?: number;
  beta2?: number;
  epsilon?: number;
  /**
   * Who applies Adam when workers > 1: 'sharded' (default; each worker reduces and updates its own block-
   * aligned range, so the serial part of a step halves: ~66 CPU-ms -> ~33 per step at V 8,000 / 256 units)
   * or 'main' (the main thread does it all). Both give the same bytes.
   */
  update?: 'main' | 'sharded';
}

export interface StepTimings {
  /** Slowest worker's variable refresh and gradient computation, ms. */
  load: number;
  compute: number;
  /** Reduction + norm + Adam (including message round trips), ms. */
  update: number;
  /** Thread CPU time of the busiest replica's refresh + gradient, ms (Linux; NaN elsewhere). */
  cpu: number;
  total: number;
}

export interface ParallelTrainer {
  /** Number of replicas actually used. */
  readonly workers: number;
  /** Updates applied so far. */
  readonly iterations: number;
  learningRate: number;
  /** One optimizer step on `batch`: mean loss over its real targets, and how many there were. */
  step(batch: CaptionBatch, seed: number): Promise<{ loss: number; tokens: number; norm: number; ms: StepTimings }>;
  /** Copies of the current weights, by name. */
  readWeights(): Record<string, Float32Array>;
  /** Copy the current weights into a main-thread model's variables (for validation and saving). */
  copyTo(model: { weights: Record<string, tf.Variable> }): void;
  /** Adam moments in the checkpoint format of src/train/adam.ts (m/<name>, v/<name>). */
  state(): { iterations: number; learningRate: number; arrays: NamedArray[] };
  restore(iterations: number, learningRate: number, arrays: Map<string, NamedArray>): void;
  /** Terminate the workers and free the replica (idempotent). */
  dispose(): Promise<void>;
}

/** The worker count `workers: auto | N` means on this machine. */
export function resolveWorkers(w: number | 'auto'): number {
  if (w === 'auto') return Math.max(1, availableParallelism());
  if (!Number.isInteger(w) || w < 1) throw new ConfigError(`train.workers: expected "auto" or a positive integer, got ${JSON.stringify(w)}`);
  return w;
}

export async function createParallelTrainer(o: ParallelTrainerOptions): Promise<ParallelTrainer> {
  const n = resolveWorkers(o.workers);
  const layout = flatLayout(kindShapes(o.kind, o.spec));
  const hyper: AdamHyper = { learningRate: o.learningRate, beta1: o.beta1 ?? 0.9, beta2: o.beta2 ?? 0.999, epsilon: o.epsilon ?? 1e-7, clipNorm: o.clipNorm ?? 0 };
  const shared = (floats: number) => new Float32Array(n > 1 ? new SharedArrayBuffer(floats * 4) : new ArrayBuffer(floats * 4));
  const weights = shared(layout.total);
  packWeights(layout, o.weights, weights);
  const grads = shared(layout.total * n);
  const m = shared(layout.total);
  const v = shared(layout.total);
  const engine = n === 1 ? await localEngine(o, layout, weights, grads) : await workerEngine(o, n, layout, weights, grads, m, v);
  return new Trainer(n, o.update ?? 'sharded', o.kind, o.spec, layout, hyper, weights, grads, m, v, engine);
}

/** Computes slice gradients into the gradient regions and runs range jobs. */
interface Engine {
  grad(i: number, batch: CaptionBatch, weights: SliceWeights, seed: number): Promise<{ loss: number; load: number; compute: number; cpu: number }>;
  reduce?(i: number, parts: number, from: number, to: number): Promise<Float64Array>;
  adam?(i: number, hyper: AdamHyper, from: number, to: number, scale: number, lr: number): Promise<void>;
  dispose(): Promise<void>;
}

class Trainer implements ParallelTrainer {
  iterations = 0;
  private broken: Error | undefined;
  private disposed = false;
  private busy = false;
  private readonly featureSize: number;

  constructor(
    readonly workers: number,
    private readonly update: 'main' | 'sharded',
    readonly kind: ReplicaKind,
    spec: ReplicaSpec,
    private readonly layout: FlatLayout,
    private readonly hyper: AdamHyper,
    private readonly weights: Float32Array,
    private readonly grads: Float32Array,
    private readonly m: Float32Array,
    private readonly v: Float32Array,
    private readonly engine: Engine,
  ) {
    this.featureSize = featureSizeOf(kind, spec);
  }

  get learningRate(): number {
    return this.hyper.learningRate;
  }
  set learningRate(lr: number) {
    this.hyper.learningRate = lr;
  }

  async step(batch: CaptionBatch, seed: number) {
    if (this.disposed) throw new Error('parallel training: step after dispose');
    if (this.broken) throw this.broken;
    if (batch.images.length !== batch.size * this.featureSize) throw new ModelError(`batch: ${batch.images.length} feature values for ${batch.size} images of ${this.featureSize}`);
    if (batch.targets.length === 0) throw new ModelError('batch: no target tokens');
    if (this.busy) throw new Error('parallel training: step() called while another step is running; await each step');
    this.busy = true;
    const t0 = performance.now();
    try {
      const slices = splitBatch(batch, this.workers, this.featureSize);
      const res = await Promise.all(slices.map((s, i) => this.engine.grad(i, s.batch, { tokens: s.weight, rows: s.rowWeight }, mixSeed(seed, i))));
      let loss = 0;
      for (const r of res) loss += r.loss; // weighted parts, in slice order
      const t1 = performance.now();
      const parts = slices.length;
      const total = this.layout.total;
      const t = this.iterations + 1;
      let norm: number;
      if (this.update === 'sharded' && this.engine.reduce && this.engine.adam) {
        const ranges = shardRanges(total, this.workers);
        const blocks = await Promise.all(ranges.map(([a, b], i) => this.engine.reduce!(i, parts, a, b)));
        norm = normOf(blocks.flatMap((x) => Array.from(x)));
        const { scale, lr } = adamFactors(this.hyper, t, norm);
        await Promise.all(ranges.map(([a, b], i) => this.engine.adam!(i, this.hyper, a, b, scale, lr)));
      } else {
        norm = normOf(reduceGradients(this.grads, total, parts, 0, total));
        const { scale, lr } = adamFactors(this.hyper, t, norm);
        applyAdam(this.hyper, this.weights, this.m, this.v, this.grads, 0, total, scale, lr);
      }
      this.iterations = t;
      const t2 = performance.now();
      return {
        loss, tokens: batch.targets.length, norm,
        ms: { load: Math.max(...res.map((r) => r.load)), compute: Math.max(...res.map((r) => r.compute)), cpu: Math.max(...res.map((r) => r.cpu)), update: t2 - t1, total: t2 - t0 },
      };
    } catch (e) {
      // a failed step may have left the replicas half-updated: refuse further steps
      this.broken = e as Error;
      throw e;
    } finally {
      this.busy = false;
    }
  }

  readWeights(): Record<string, Float32Array> {
    return unpackWeights(this.layout, this.weights);
  }

  copyTo(model: { weights: Record<string, tf.Variable> }): void {
    loadFlat(model as unknown as TrainableDecoder, this.layout, this.weights);
  }

  state() {
    return { iterations: this.iterations, learningRate: this.hyper.learningRate, arrays: momentArrays(this.layout, this.m, this.v) };
  }

  restore(iterations: number, learningRate: number, arrays: Map<string, NamedArray>): void {
    loadMoments(this.layout, arrays, this.m, this.v);
    this.iterations = iterations;
    this.hyper.learningRate = learningRate;
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    // a step in flight is abandoned: its promise rejects (the workers exit) and the trainer stays unusable
    this.disposed = true;
    await this.engine.dispose();
  }
}

/** workers: 1 — the replica lives in the main thread, on the current backend. */
async function localEngine(o: ParallelTrainerOptions, layout: FlatLayout, weights: Float32Array, grads: Float32Array): Promise<Engine> {
  const model = buildDecoder(o.kind, o.spec, unpackWeights(layout, weights), o.norm);
  return {
    async grad(_i, batch, sw, seed) {
      const c0 = threadCpuMs() ?? NaN;
      const t0 = performance.now();
      loadFlat(model, layout, weights);
      const t1 = performance.now();
      const loss = await sliceGradient(model, layout, batch, sw, seed, grads.subarray(0, layout.total));
      return { loss, load: t1 - t0, compute: performance.now() - t1, cpu: (threadCpuMs() ?? NaN) - c0 };
    },
    async dispose() {
      model.dispose();
    },
  };
}

async function workerEngine(o: ParallelTrainerOptions, n: number, layout: FlatLayout, weights: Float32Array, grads: Float32Array, m: Float32Array, v: Float32Array): Promise<Engine> {
  const entry = workerEntry(import.meta.url, 'worker');
  const undoBlas = shareBlasThreads(n); // each worker's products on cores / n BLAS threads
  const list = Array.from({ length: n }, (_, i) => {
    const data: WorkerInit = {
      index: i, kind: o.kind, spec: o.spec, norm: o.norm, layout,
      weights: weights.buffer as SharedArrayBuffer, grads: grads.buffer as SharedArrayBuffer, m: m.buffer as SharedArrayBuffer, v: v.buffer as SharedArrayBuffer,
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
      return { loss: r.loss, load: r.ms.load ?? 0, compute: r.ms.compute ?? 0, cpu: r.ms.cpu ?? NaN };
    },
    async reduce(i, parts, from, to) {
      return (await workers[i].call('reduce', { parts, from, to })).blocks;
    },
    async adam(i, hyper, from, to, scale, lr) {
      await workers[i].call('adam', { hyper, from, to, scale, lr });
    },
    dispose: () => close(new Error('parallel training: the trainer was disposed during a step')),
  };
}
