// Faster GatherV2 and Tile for the tfjs wasm backend (4.22). The stock kernels move one element
// at a time through generic strided loops (gathering 2,176 rows of 256 floats took ~40 ms, tiling
// [64, 1, 256] by [1, 34, 1] ~60 ms). These work on the wasm heap through typed-array views and
// copy contiguous blocks (rows) with TypedArray.set / copyWithin. float32, int32 and bool are
// handled (bool is one byte per element on the heap, as its Uint8Array view); other dtypes fall
// back to the stock kernels.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';
import { tf } from './tf.js';
import { forEachPrefix, sizeOf } from './heap.js';

type Args = { inputs: Record<string, TensorInfo | undefined>; backend: BackendWasm; attrs?: NamedAttrMap };
type HeapArray = Float32Array | Int32Array | Uint8Array;

const HANDLED = new Set(['float32', 'int32', 'bool']);

/** Blocks shorter than this are copied element by element (a set() call costs more). */
const SMALL_BLOCK = 16;

/** Register the heap-view GatherV2 and Tile kernels for wasm (stock ones kept for other dtypes). */
export function patchWasmGatherTile(): string[] {
  const done: string[] = [];
  const replace = (name: string, f: (args: Args) => TensorInfo) => {
    const orig = tf.getKernel(name, 'wasm');
    if (!orig) return;
    const kernelFunc = ((args: Args) => {
      const x = args.inputs.x!;
      if (!HANDLED.has(x.dtype)) return orig.kernelFunc(args as never);
      return f(args);
    }) as unknown as KernelFunc;
    tf.unregisterKernel(name, 'wasm');
    // keep the stock setupFunc: the fallback path needs its wasm function bound
    tf.registerKernel({ ...orig, kernelFunc } as KernelConfig);
    done.push(name);
  };
  replace('GatherV2', gatherV2);
  replace('Tile', tile);
  return done;
}

/**
 * x gathered along `axis` at `indices` (batchDims leading dims shared by x and indices):
 * x [batch..., outer..., dim, inner...], indices [batch..., idx...] -> [batch..., outer..., idx..., inner...]
 * Out-of-range indices throw the same error as the cpu and stock wasm kernels.
 */
function gatherV2({ inputs, backend, attrs }: Args): TensorInfo {
  const x = inputs.x!;
  const indices = inputs.indices!;
  const a = (attrs ?? {}) as { axis?: number; batchDims?: number };
  const axis = tf.util.parseAxisParam(a.axis ?? 0, x.shape)[0];
  const axisDim = x.shape[axis];
  const nIdx = sizeOf(indices.shape);
  {
    const idx = readInts(indices, backend);
    for (let i = 0; i < nIdx; i++) {
      const v = idx[i];
      if (!(v >= 0 && v <= axisDim - 1)) throw new Error(`GatherV2: the index value ${v} is not in [0, ${axisDim - 1}]`);
    }
  }
  const info = tf.backend_util.segment_util.collectGatherOpShapeInfo(x as never, indices as never, axis, a.batchDims ?? 0);
  const { batchSize, outerSize, dimSize, sliceSize: inner } = info;
  const out = backend.makeOutput(info.outputShape, x.dtype);
  if (sizeOf(info.outputShape) === 0) return out;
  const perBatch = nIdx / batchSize;
  // views after makeOutput: an allocation may grow (and detach) the heap
  const xv = backend.typedArrayFromHeap(x) as HeapArray;
  const ov = backend.typedArrayFromHeap(out) as HeapArray;
  const idx = readInts(indices, backend);
  let dst = 0;
  for (let b = 0; b < batchSize; b++) {
    const ib = b * perBatch;
    for (let o = 0; o < outerSize; o++) {
      const base = (b * outerSize + o) * dimSize * inner;
      for (let i = 0; i < perBatch; i++) {
        const src = base + idx[ib + i] * inner;
        if (inner < SMALL_BLOCK) {
          for (let j = 0; j < inner; j++) ov[dst + j] = xv[src + j];
        } else {
          ov.set(xv.subarray(src, src + inner), dst);
        }
        dst += inner;
      }
    }
  }
  return out;
}

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

/** Indices as int32 (a heap view when they are int32, else a truncated copy). */
function readInts(t: TensorInfo, backend: BackendWasm): Int32Array {
  if (t.dtype === 'int32') return backend.typedArrayFromHeap(t) as Int32Array;
  return Int32Array.from(backend.readSync(t.dataId) as ArrayLike<number>, Math.trunc);
}
