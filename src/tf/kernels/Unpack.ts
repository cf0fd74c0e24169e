// Unpack (tf.unstack) for the tfjs wasm backend: one heap slice per output (./Slice.ts) instead of the stock
// kernel's full copy of the input per output. Strings fall back to the stock kernel.
import type { TensorInfo } from '@tensorflow/tfjs';
import { heapKernel } from './types.js';
import { notString, sliceOnHeap } from './Slice.js';

export const unpackOverride = heapKernel('Unpack', notString, ({ inputs, backend, attrs }) => {
  const x = inputs.value!;
  const rank = x.shape.length;
  let axis = Number((attrs as { axis: number }).axis);
  if (axis < 0) axis += rank;
  const outShape = x.shape.filter((_, i) => i !== axis);
  const begin = new Array<number>(rank).fill(0);
  const size = x.shape.slice();
  size[axis] = 1;
  const outs: TensorInfo[] = [];
  for (let i = 0; i < x.shape[axis]; i++) {
    begin[axis] = i;
    const o = sliceOnHeap(x, begin, size, backend);
    outs.push({ dataId: o.dataId, dtype: o.dtype, shape: outShape });
  }
  return outs;
});
