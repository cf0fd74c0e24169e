// Requests between the parallel trainer (main thread) and its workers (carried by src/util/rpc.ts). Shared
// memory (SharedArrayBuffer) carries the weights, the per-worker gradient regions and the Adam moments;
// requests carry only batch slices, seeds and small results.
import type { CaptionBatch, FeatureNorm } from '../../model/decoders/batch.js';
import type { AdamFactors } from '../adam.js';
import type { FlatLayout } from './flat.js';
import type { ReplicaKind, ReplicaSpec, SliceWeights } from './replica.js';

export interface WorkerInit {
  index: number;
  kind: ReplicaKind;
  spec: ReplicaSpec;
  norm: FeatureNorm;
  /** train.labelSmoothing (0: none). */
  labelSmoothing: number;
  layout: FlatLayout;
  /** [total] weights. */
  weights: SharedArrayBuffer;
  /** [workers * total] gradient regions, worker i at i * total. */
  grads: SharedArrayBuffer;
  /** [total] Adam moments. */
  m: SharedArrayBuffer;
  v: SharedArrayBuffer;
}

/** Milliseconds a request took in the worker (cpu: its thread's CPU time, where the platform says). */
export interface WorkerMs {
  load?: number;
  compute?: number;
  cpu?: number;
}

export type TrainWorkerApi = {
  /** The gradient of one batch slice into this worker's region; its weighted loss and weighted objective. */
  grad(r: {
    batch: CaptionBatch;
    weights: SliceWeights;
    seed: number;
  }): Promise<{ loss: number; total: number; ms: WorkerMs }>;
  /** Sum regions 0..parts-1 into region 0 over [from, to); the block sums of squares. */
  reduce(r: { parts: number; from: number; to: number }): { blocks: Float64Array; ms: WorkerMs };
  /** Adam's inner loop (src/train/adam.ts) with the main thread's factors over [from, to) of the shared weights and moments. */
  adam(r: { factors: AdamFactors; from: number; to: number }): { ms: WorkerMs };
};
