// Tile for the tfjs wasm backend (4.22) on the heap. The stock kernel moves one element at a time (tiling
// [64, 1, 256] by [1, 34, 1] took ~60 ms); this one writes each row once and doubles runs in place with
// TypedArray.set / copyWithin. float32, int32 and bool are handled; other dtypes fall back to the stock kernel.
import type { TensorInfo } from '@tensorflow/tfjs';
import { forEachPrefix, sizeOf, SMALL_BLOCK, type HeapArray } from '../heap.js';
import { heapKernel, type Args } from './types.js';
import { onHeap } from './GatherV2.js';

/**
 * x repeated reps[d] times along each dim d: x [s0, ..., sk] -> [s0*r0, ..., sk*rk].
 * Dims are first merged where possible (a dim followed by one with reps 1 is one longer dim), then
 * each innermost row of x is written once and doubled in place (copyWithin), and each outer block
 * likewise, from the inside out.
 */
function tile({ inputs, backend, attrs }: Args): TensorInfo {
  const x = inputs.x!;
  const reps = (attrs as { reps: number[] }).reps;
  const outShape = x.shape.map((d, i) => d * reps[i]);
  const out = backend.makeOutput(outShape, x.dtype);
  if (sizeOf(outShape) === 0) return out;
  // merged dims: xs[k] (x's size) and rs[k] (reps); a reps-1 dim joins the dim before it
  const xs: number[] = [];
  const rs: number[] = [];
  for (let d = 0; d < x.shape.length; d++) {
    if (reps[d] === 1 && xs.length > 0) xs[xs.length - 1] *= x.shape[d];
    else if (!(reps[d] === 1 && x.shape[d] === 1)) {
      xs.push(x.shape[d]);
      rs.push(reps[d]);
    }
  }
  const xv = backend.typedArrayFromHeap(x) as HeapArray;
  const ov = backend.typedArrayFromHeap(out) as HeapArray;
  const rank = xs.length;
  if (rank === 0) {
    ov.set(xv.subarray(0, ov.length));
    return out;
  }
  const os = xs.map((d, i) => d * rs[i]);
  const ostr = new Array<number>(rank);
  ostr[rank - 1] = 1;
  for (let d = rank - 2; d >= 0; d--) ostr[d] = ostr[d + 1] * os[d + 1];
  // 1) every row of x (last merged dim) into its first-tile place, repeated along that dim
  const len = xs[rank - 1];
  const rowReps = rs[rank - 1];
  forEachPrefix(xs, ostr, rank - 1, (dst, n) => {
    const src = n * len;
    if (len < SMALL_BLOCK) for (let j = 0; j < len; j++) ov[dst + j] = xv[src + j];
    else ov.set(xv.subarray(src, src + len), dst);
    double(ov, dst, len, rowReps);
  });
  // 2) outer dims, inside out: the filled block of dim d is repeated rs[d] times in place
  for (let d = rank - 2; d >= 0; d--) {
    if (rs[d] === 1) continue;
    const block = xs[d] * ostr[d];
    forEachPrefix(xs, ostr, d, (base) => double(ov, base, block, rs[d]));
  }
  return out;
}

/** a[at : at + len] (already filled) repeated `times` times from `at`, doubling the copied run. */
function double(a: HeapArray, at: number, len: number, times: number): void {
  const total = len * times;
  let done = len;
  while (done < total) {
    const n = Math.min(done, total - done);
    if (n < SMALL_BLOCK) for (let j = 0; j < n; j++) a[at + done + j] = a[at + j];
    else a.copyWithin(at + done, at, at + n);
    done += n;
  }
}

export const tileOverride = heapKernel('Tile', onHeap, tile);
