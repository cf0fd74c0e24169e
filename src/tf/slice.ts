// Faster Slice / Unpack / SplitV for the tfjs wasm backend (4.22). The stock kernels copy the
// WHOLE input out of the wasm heap (backend.readSync) for every slice, so unstacking a
// [64, 21, 1024] LSTM input costs 21 full copies. These read the heap through a view and copy
// only the sliced elements, in contiguous blocks. Strings fall back to the stock kernels.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';
import { tf } from './tf.js';
import { forEachPrefix } from './heap.js';

type Args = { inputs: Record<string, TensorInfo | undefined>; backend: BackendWasm; attrs?: NamedAttrMap };

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

/** Register the heap-view Slice, Unpack and SplitV kernels for wasm (stock ones kept for strings). */
export function patchWasmSlicing(): void {
  const stock: Record<string, KernelConfig | undefined> = {};
  for (const name of ['Slice', 'Unpack', 'SplitV']) stock[name] = tf.getKernel(name, 'wasm');
  const replace = (name: string, f: (args: Args) => TensorInfo | TensorInfo[]) => {
    const orig = stock[name];
    if (!orig) return;
    const kernelFunc = ((args: Args) => {
      const x = (args.inputs.x ?? args.inputs.value)!;
      if (x.dtype === 'string') return orig.kernelFunc(args as never);
      return f(args);
    }) as unknown as KernelFunc;
    tf.unregisterKernel(name, 'wasm');
    tf.registerKernel({ ...orig, kernelFunc });
  };

  replace('Slice', ({ inputs, backend, attrs }) => {
    const x = inputs.x!;
    const a = attrs as unknown as { begin: number | number[]; size?: number | number[] };
    const [b, s] = tf.slice_util.parseSliceParams(x as never, a.begin, a.size);
    return sliceOnHeap(x, b, s, backend);
  });

  replace('Unpack', ({ inputs, backend, attrs }) => {
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

  replace('SplitV', ({ inputs, backend, attrs }) => {
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
}
