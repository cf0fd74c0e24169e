// Slice for the tfjs wasm backend (4.22) on the heap. The stock kernels copy the WHOLE input out of the wasm
// heap (backend.readSync) for every slice, so unstacking a [64, 21, 1024] LSTM input cost 21 full copies.
// sliceOnHeap reads the heap through a view and copies only the sliced elements, in contiguous blocks; Unpack
// and SplitV (./Unpack.ts, ./SplitV.ts) are built on it. Strings fall back to the stock kernels.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { TensorInfo } from '@tensorflow/tfjs';
import { tf } from '../tf.js';
import { forEachPrefix } from '../heap.js';
import { heapKernel } from './types.js';

/** x[begin : begin + size] (begin/size already resolved: non-negative, explicit) as a new tensor. */
export function sliceOnHeap(x: TensorInfo, begin: number[], size: number[], backend: BackendWasm): TensorInfo {
  const out = backend.makeOutput(size, x.dtype);
  const rank = x.shape.length;
  let total = 1;
  for (const s of size) total *= s;
  if (total === 0) return out;
  // views after makeOutput: an allocation may grow (and detach) the heap
  const xv = backend.typedArrayFromHeap(x);
  const ov = backend.typedArrayFromHeap(out);
  if (rank === 0) {
    ov.set(xv.subarray(0, 1));
    return out;
  }
  const strides = new Array<number>(rank);
  strides[rank - 1] = 1;
  for (let d = rank - 2; d >= 0; d--) strides[d] = strides[d + 1] * x.shape[d + 1];
  // k: the innermost dim not fully covered; everything after it is copied as one block
  let k = rank - 1;
  while (k > 0 && begin[k] === 0 && size[k] === x.shape[k]) k--;
  const block = size[k] * strides[k];
  let base = begin[k] * strides[k];
  if (k === 0) {
    ov.set(xv.subarray(base, base + block));
    return out;
  }
  for (let d = 0; d < k; d++) base += begin[d] * strides[d];
  // one block per index of dims 0..k-1
  forEachPrefix(size, strides, k, (off, n) => ov.set(xv.subarray(base + off, base + off + block), n * block));
  return out;
}

/** Any dtype but strings (whose heap holds no values). */
export const notString = (dtype: string) => dtype !== 'string';

export const sliceOverride = heapKernel('Slice', notString, ({ inputs, backend, attrs }) => {
  const x = inputs.x!;
  const a = attrs as unknown as { begin: number | number[]; size?: number | number[] };
  const [b, s] = tf.slice_util.parseSliceParams(x as never, a.begin, a.size);
  return sliceOnHeap(x, b, s, backend);
});
