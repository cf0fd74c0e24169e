// BatchMatMul for the tfjs wasm backend (4.22). With the native addon (../addon.ts) the products run by
// OpenBLAS on the heap (transposes and batches included). Otherwise on wasm's own kernel, with two fixes:
// transposed operands never reach its slow transposed path (./untransposed.ts), and a batch > 1, which also
// takes the slow path, is folded into one 2-D product or split into 2-D products on views of the inputs.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import { tf } from '../tf.js';
import { heapOffset, matMulDims, sizeOf } from '../heap.js';
import { addonMatMul } from '../addon.js';
import type { Args, KernelOverride } from './types.js';
import { swapLastTwo, track, untransposed } from './untransposed.js';

/** Per-batch products smaller than this many multiply-adds stay on the stock kernel. */
const MIN_BATCH_WORK = 16 * 1024;

/**
 * BatchMatMul on wasm's own kernels (what runs without the addon), given the stock kernel. Transposed
 * operands go through untransposed(). With batch dims: the stock wasm kernel only uses XNNPACK when the batch is 1
 * (a batch of 16 [64x256]x[256x1024] products is ~18x slower than 16 separate ones). When B has
 * batch 1 we fold A's batch into its rows (one 2-D product); otherwise we run one 2-D product per
 * batch entry on slices that alias the inputs' memory, copying each result into the output.
 */
export function wasmBatchMatMul(kernelFunc: KernelFunc): KernelFunc {
  const twoD = untransposed(kernelFunc, true);
  return ((args: Args) => {
    const a = args.inputs.a!;
    const b = args.inputs.b!;
    const { tA, M, K, N, batchA, batchB } = matMulDims(a, b, args.attrs);
    if (batchA <= 1 && batchB <= 1) return twoD(args);
    const attrs = args.attrs ?? {};
    if (a.dtype !== 'float32' || b.dtype !== 'float32' || M * K * N < MIN_BATCH_WORK) return kernelFunc(args as never);
    if (batchA !== batchB && batchA !== 1 && batchB !== 1) return kernelFunc(args as never);
    const backend = args.backend;
    const outShape = [
      ...tf.broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2)),
      M,
      N,
    ];
    const temps: TensorInfo[] = [];
    try {
      if (batchB === 1) {
        // [batch, M, K] rows folded: one [batch*M, K] x [K, N] product; reshapes are free.
        const aRows = tA ? track(temps, swapLastTwo(a, backend)) : a;
        const a2: TensorInfo = { dataId: aRows.dataId, dtype: aRows.dtype, shape: [batchA * M, K] };
        const b2: TensorInfo = { dataId: b.dataId, dtype: b.dtype, shape: b.shape.slice(-2) };
        const r = twoD({
          inputs: { a: a2, b: b2 },
          backend,
          attrs: { ...attrs, transposeA: false },
        } as never) as TensorInfo;
        return { ...r, shape: outShape };
      }
      const batch = Math.max(batchA, batchB);
      const out = backend.makeOutput(outShape, 'float32');
      try {
        const aTile = a.shape.slice(-2);
        const bTile = b.shape.slice(-2);
        for (let i = 0; i < batch; i++) {
          const ai = sliceView(a, batchA === 1 ? 0 : i, aTile, backend);
          const bi = sliceView(b, batchB === 1 ? 0 : i, bTile, backend);
          try {
            const ri = twoD({ inputs: { a: ai, b: bi }, backend, attrs } as never) as TensorInfo;
            // views after every allocation: the wasm heap may have grown
            (backend.typedArrayFromHeap(out) as Float32Array).set(
              backend.typedArrayFromHeap(ri) as Float32Array,
              i * M * N,
            );
            backend.disposeData(ri.dataId);
          } finally {
            releaseView(ai, backend);
            releaseView(bi, backend);
          }
        }
        return out;
      } catch (e) {
        backend.disposeData(out.dataId);
        throw e;
      }
    } finally {
      for (const t of temps) backend.disposeData(t.dataId);
    }
  }) as KernelFunc;
}

/**
 * x[index] (x seen as [batch, ...tile]) as a tensor of shape `tile` that aliases x's memory (no
 * copy). Release it with releaseView, never disposeData (that would free memory x owns).
 */
function sliceView(x: TensorInfo, index: number, tile: number[], backend: BackendWasm): TensorInfo {
  const bytes = sizeOf(tile) * 4;
  const base = heapOffset(backend, x);
  return backend.makeOutput(tile, x.dtype, base + index * bytes);
}

function releaseView(v: TensorInfo, backend: BackendWasm): void {
  const data = backend.dataIdMap.get(v.dataId);
  if (!data) return;
  backend.dataIdMap.delete(v.dataId);
  backend.wasm.tfjs.disposeData(data.id);
}

export const batchMatMulOverride: KernelOverride = {
  kernelName: 'BatchMatMul',
  override(stock) {
    if (!stock) return undefined;
    const onWasm = wasmBatchMatMul(stock.kernelFunc);
    return { ...stock, kernelFunc: ((args: Args) => addonMatMul(args) ?? onWasm(args as never)) as KernelFunc };
  },
};
