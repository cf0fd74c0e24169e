// GatherV2 for the tfjs wasm backend (4.22) on the heap. The stock kernel moves one element at a time
// through generic strided loops (gathering 2,176 rows of 256 floats took ~40 ms); this one copies contiguous
// rows with TypedArray.set through heap views. float32, int32 and bool are handled (bool is one byte per
// element on the heap, as its Uint8Array view); other dtypes fall back to the stock kernel.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { TensorInfo } from '@tensorflow/tfjs';
import { tf } from '../tf.js';
import { sizeOf, SMALL_BLOCK, type HeapArray } from '../heap.js';
import { heapKernel, type Args } from './types.js';

/** The dtypes the heap-view GatherV2 and Tile take. */
export const onHeap = (dtype: string) => dtype === 'float32' || dtype === 'int32' || dtype === 'bool';

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
      if (!(v >= 0 && v <= axisDim - 1))
        throw new Error(`GatherV2: the index value ${v} is not in [0, ${axisDim - 1}]`);
    }
  }
  const info = tf.backend_util.segment_util.collectGatherOpShapeInfo(
    x as never,
    indices as never,
    axis,
    a.batchDims ?? 0,
  );
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

/** Indices as int32 (a heap view when they are int32, else a truncated copy). */
function readInts(t: TensorInfo, backend: BackendWasm): Int32Array {
  if (t.dtype === 'int32') return backend.typedArrayFromHeap(t) as Int32Array;
  return Int32Array.from(backend.readSync(t.dataId) as ArrayLike<number>, Math.trunc);
}

export const gatherV2Override = heapKernel('GatherV2', onHeap, gatherV2);
