// SplitV (tf.split) for the tfjs wasm backend: one heap slice per part (./Slice.ts) instead of the stock
// kernel's full copy of the input per part. Strings fall back to the stock kernel.
import type { TensorInfo } from '@tensorflow/tfjs';
import { tf } from '../tf.js';
import { heapKernel } from './types.js';
import { notString, sliceOnHeap } from './Slice.js';

export const splitVOverride = heapKernel('SplitV', notString, ({ inputs, backend, attrs }) => {
  const x = inputs.x!;
  const a = attrs as unknown as { numOrSizeSplits: number | number[]; axis: number | number[] };
  const axis = tf.util.parseAxisParam(a.axis, x.shape)[0];
  const sizes = tf.backend_util.prepareSplitSize(x as never, a.numOrSizeSplits, axis);
  const begin = new Array<number>(x.shape.length).fill(0);
  const outs: TensorInfo[] = [];
  for (const s of sizes) {
    const size = x.shape.slice();
    size[axis] = s;
    outs.push(sliceOnHeap(x, begin, size, backend));
    begin[axis] += s;
  }
  return outs;
});
