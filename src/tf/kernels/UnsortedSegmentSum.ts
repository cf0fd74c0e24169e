// UnsortedSegmentSum on the wasm heap: the stock wasm backend (tfjs 4.22) has no such kernel, and the
// gradient of tf.gather (Embedding) needs it.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import { sizeOf } from '../heap.js';
import { BACKEND, type Args, type KernelOverride } from './types.js';

/**
 * out[s, ...] = sum of x[i, ...] over i with segmentIds[i] == s. segmentIds has the shape of x's leading
 * dims; ids outside [0, numSegments) are dropped (as in TF).
 * x [n..., inner...] -> out [numSegments, inner...]
 */
function unsortedSegmentSum(args: Args): TensorInfo {
  const { backend } = args;
  const x = args.inputs.x!;
  const ids = args.inputs.segmentIds!;
  const numSegments = Number((args.attrs as { numSegments: number }).numSegments);
  if (x.dtype !== 'float32' && x.dtype !== 'int32')
    throw new Error(`UnsortedSegmentSum on wasm: unsupported dtype ${x.dtype}`);
  const n = sizeOf(ids.shape);
  const total = sizeOf(x.shape);
  const inner = n === 0 ? 0 : total / n;
  const outShape = [numSegments, ...x.shape.slice(ids.shape.length)];
  const out = backend.makeOutput(outShape, x.dtype);
  // Views are taken after makeOutput: a malloc may grow (and detach) the heap.
  const outVals = backend.typedArrayFromHeap(out) as Float32Array | Int32Array;
  outVals.fill(0);
  if (n === 0 || inner === 0) return out;
  const xVals = backend.typedArrayFromHeap(x) as Float32Array | Int32Array;
  const idVals = readIds(ids, backend);
  for (let i = 0; i < n; i++) {
    const s = idVals[i];
    if (s < 0 || s >= numSegments) continue;
    const src = i * inner;
    const dst = s * inner;
    for (let j = 0; j < inner; j++) outVals[dst + j] += xVals[src + j];
  }
  return out;
}

function readIds(t: TensorInfo, backend: BackendWasm): Int32Array | Float32Array {
  if (t.dtype === 'int32' || t.dtype === 'float32') return backend.typedArrayFromHeap(t) as Int32Array | Float32Array;
  return Int32Array.from(backend.readSync(t.dataId) as ArrayLike<number>);
}

export const unsortedSegmentSumOverride: KernelOverride = {
  kernelName: 'UnsortedSegmentSum',
  override: () => ({
    kernelName: 'UnsortedSegmentSum',
    backendName: BACKEND,
    kernelFunc: unsortedSegmentSum as unknown as KernelFunc,
  }),
};
