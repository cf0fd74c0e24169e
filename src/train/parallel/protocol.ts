// Messages between the parallel trainer (main thread) and its workers. Shared memory (SharedArrayBuffer)
// carries the weights, the per-worker gradient regions and the Adam moments; messages carry only batch
// slices, seeds and small results.
import type { CaptionBatch, FeatureNorm } from '../../model/decoders/batch.js';
import type { AdamFactors } from '../adam.js';
import type { FlatLayout } from './flat.js';
import type { ReplicaKind, ReplicaSpec, SliceWeights } from './replica.js';

export interface WorkerInit {
  index: number;
  kind: ReplicaKind;
  spec: ReplicaSpec;
  norm: FeatureNorm;
  layout: FlatLayout;
  backend: 'wasm' | 'cpu';
  /** [total] weights. */
  weights: SharedArrayBuffer;
  /** [workers * total] gradient regions, worker i at i * total. */
  grads: SharedArrayBuffer;
  /** [total] Adam moments. */
  m: SharedArrayBuffer;
  v: SharedArrayBuffer;
}

export type ToWorker =
  | { op: 'grad'; id: number; batch: CaptionBatch; weights: SliceWeights; seed: number }
  /** Sum regions 0..parts-1 into region 0 over [from, to); reply with the block sums of squares. */
  | { op: 'reduce'; id: number; parts: number; from: number; to: number }
  /** Run Adam's inner loop with the main thread's factors over [from, to) of the weights and moments. */
  | { op: 'adam'; id: number; factors: AdamFactors; from: number; to: number };

export type FromWorker =
  | { op: 'ready' }
  | { op: 'done'; id: number; loss?: number; total?: number; blocks?: Float64Array; ms: { load?: number; compute?: number; cpu?: number } }
  | { op: 'error'; id: number; name: string; message: string };
