// Kernel fixes for the tfjs wasm backend (4.22), so that models can *train* on wasm, and fast:
//  - UnsortedSegmentSum is missing on wasm, and the gradient of tf.gather (Embedding) needs it:
//    we register a JS implementation that works directly on the wasm heap.
//  - BatchMatMul / _FusedMatMul with transposeA/transposeB take a slow non-XNNPACK path
//    (10-40x slower than the plain case); we transpose with the wasm Transpose kernel and call
//    the original kernel with no transposes (choosing A·B or (Bᵀ·Aᵀ)ᵀ by a cost model).
//  - BatchMatMul with a batch > 1 also takes the slow path; we fold or split it into 2-D products.
//  - Slice / Unpack / SplitV copied the whole input per slice; see ./slice.ts.
//  - GatherV2 / Tile copied element by element (~40-60 ms for the merge decoder's embedding
//    gather and image-row tile); heap-view block copies in ./gather.ts.
//  - Identity (every tensor autograd saves for the backward pass goes through it) copied the data;
//    it now shares the buffer by reference count, as the cpu backend and wasm's own Reshape do.
//  - When the native addon and OpenBLAS load (./native.ts), BatchMatMul and _FusedMatMul run by BLAS on
//    the heap instead (transposes and batches included), and the fused cross-entropy kernel is added.
// `patchWasmKernels()` is idempotent and safe to call before or after the wasm backend starts.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';
import { tf } from './tf.js';
import { patchWasmSlicing } from './slice.js';
import { patchWasmGatherTile } from './gather.js';
import { heapOffset, matMulDims, sizeOf } from './heap.js';
import { nativeFusedMatMul, nativeMatMul, registerNativeKernels } from './native.js';

const BACKEND = 'wasm';
let patched = false;

/** The original wasm kernels we wrap (kept so tests and benchmarks can compare). */
export const originalWasmKernels: Partial<Record<'BatchMatMul' | '_FusedMatMul', KernelConfig>> = {};

type Args = { inputs: Record<string, TensorInfo | undefined>; backend: BackendWasm; attrs?: NamedAttrMap };

/**
 * Install the wasm kernel fixes (no-op when already installed, or when the wasm backend module
 * has not been imported yet: src/tf/wasm.ts imports it first). Returns the names patched.
 */
export function patchWasmKernels(): string[] {
  if (patched || !tf.getKernel('BatchMatMul', BACKEND)) return [];
  patched = true;
  const done: string[] = [];
  replaceKernel({ kernelName: 'UnsortedSegmentSum', backendName: BACKEND, kernelFunc: unsortedSegmentSum as unknown as KernelFunc });
  done.push('UnsortedSegmentSum');
  patchWasmSlicing();
  done.push('Slice', 'Unpack', 'SplitV');
  done.push(...patchWasmGatherTile());
  const identity = tf.getKernel('Identity', BACKEND);
  if (identity) {
    replaceKernel({ ...identity, kernelFunc: sharedIdentity(identity.kernelFunc) });
    done.push('Identity');
  }
  for (const name of ['BatchMatMul', '_FusedMatMul'] as const) {
    const orig = tf.getKernel(name, BACKEND);
    if (!orig) continue;
    originalWasmKernels[name] = orig;
    replaceKernel({ ...orig, kernelFunc: wrap(name, orig.kernelFunc) });
    done.push(name);
  }
  if (registerNativeKernels()) done.push('BLAS');
  return done;
}

/** Undo patchWasmKernels (for benchmarks that compare before/after). UnsortedSegmentSum stays. */
export function unpatchWasmMatMul(): void {
  for (const name of ['BatchMatMul', '_FusedMatMul'] as const) {
    const orig = originalWasmKernels[name];
    if (orig) replaceKernel(orig);
  }
}

/** Re-apply the matmul wrappers after unpatchWasmMatMul. */
export function repatchWasmMatMul(): void {
  for (const name of ['BatchMatMul', '_FusedMatMul'] as const) {
    const orig = originalWasmKernels[name];
    if (orig) replaceKernel({ ...orig, kernelFunc: wrap(name, orig.kernelFunc) });
  }
}

function replaceKernel(config: KernelConfig): void {
  if (tf.getKernel(config.kernelName, config.backendName)) tf.unregisterKernel(config.kernelName, config.backendName);
  tf.registerKernel(config);
}

function wrap(name: 'BatchMatMul' | '_FusedMatMul', kernelFunc: KernelFunc): KernelFunc {
  const onWasm = name === 'BatchMatMul' ? batched(kernelFunc) : untransposed(kernelFunc, false);
  const onBlas = name === 'BatchMatMul' ? nativeMatMul : nativeFusedMatMul;
  return ((args: Args) => onBlas(args) ?? onWasm(args as never)) as KernelFunc;
}

/** Per-batch products smaller than this many multiply-adds stay on the stock kernel. */
const MIN_BATCH_WORK = 16 * 1024;

/**
 * BatchMatMul with batch dims: the stock wasm kernel only uses XNNPACK when the batch is 1
 * (a batch of 16 [64x256]x[256x1024] products is ~18x slower than 16 separate ones). When B has
 * batch 1 we fold A's batch into its rows (one 2-D product); otherwise we run one 2-D product per
 * batch entry on slices that alias the inputs' memory, copying each result into the output.
 */
function batched(kernelFunc: KernelFunc): KernelFunc {
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
    const outShape = [...tf.broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2)), M, N];
    const temps: TensorInfo[] = [];
    try {
      if (batchB === 1) {
        // [batch, M, K] rows folded: one [batch*M, K] x [K, N] product; reshapes are free.
        const aRows = tA ? track(temps, swapLastTwo(a, backend)) : a;
        const a2: TensorInfo = { dataId: aRows.dataId, dtype: aRows.dtype, shape: [batchA * M, K] };
        const b2: TensorInfo = { dataId: b.dataId, dtype: b.dtype, shape: b.shape.slice(-2) };
        const r = twoD({ inputs: { a: a2, b: b2 }, backend, attrs: { ...attrs, transposeA: false } } as never) as TensorInfo;
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
            (backend.typedArrayFromHeap(out) as Float32Array).set(backend.typedArrayFromHeap(ri) as Float32Array, i * M * N);
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

/**
 * Wrap a matmul kernel so transposed operands never reach the kernel's slow transposed path.
 * C = op(A)·op(B) is computed either "explicit" (transpose the flagged operands, then A·B) or
 * "swapped" (C = (Bᵀ·Aᵀ)ᵀ, which needs transposes of the *unflagged* operands and of the result);
 * `chooseSwapped` picks the cheaper. Temporaries are freed before returning.
 * `swap` false forces the explicit form (used for _FusedMatMul, whose bias is per column of C).
 */
function untransposed(kernelFunc: KernelFunc, allowSwap: boolean): KernelFunc {
  return ((args: Args) => {
    const attrs = (args.attrs ?? {}) as NamedAttrMap & { transposeA?: boolean; transposeB?: boolean };
    const tA = Boolean(attrs.transposeA);
    const tB = Boolean(attrs.transposeB);
    if (!tA && !tB) return kernelFunc(args as never);
    const backend = args.backend;
    const a = args.inputs.a!;
    const b = args.inputs.b!;
    const temps: TensorInfo[] = [];
    const plain = { ...attrs, transposeA: false, transposeB: false };
    try {
      const swap = strategy === 'auto' ? chooseSwapped(a.shape, b.shape, tA, tB) : strategy === 'swapped';
      if (allowSwap && swap) {
        // left = Bᵀ [.., N, K], right = Aᵀ [.., K, M]; result [.., N, M] -> transpose -> [.., M, N]
        const left = tB ? b : track(temps, swapLastTwo(b, backend));
        const right = tA ? a : track(temps, swapLastTwo(a, backend));
        const ct = track(temps, kernelFunc({ inputs: { ...args.inputs, a: left, b: right }, backend, attrs: plain } as never) as TensorInfo);
        return swapLastTwo(ct, backend);
      }
      const a2 = tA ? track(temps, swapLastTwo(a, backend)) : a;
      const b2 = tB ? track(temps, swapLastTwo(b, backend)) : b;
      return kernelFunc({ inputs: { ...args.inputs, a: a2, b: b2 }, backend, attrs: plain } as never);
    } finally {
      for (const t of temps) backend.disposeData(t.dataId);
    }
  }) as KernelFunc;
}

/**
 * Identity without a copy: the output shares x's buffer (reference counted; wasm tensors are never
 * written in place). Strings keep the stock kernel.
 */
function sharedIdentity(stock: KernelFunc): KernelFunc {
  return ((args: Args) => {
    const x = args.inputs.x!;
    if (x.dtype === 'string') return stock(args as never);
    args.backend.incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  }) as KernelFunc;
}

function track(temps: TensorInfo[], t: TensorInfo): TensorInfo {
  temps.push(t);
  return t;
}

let strategy: 'auto' | 'explicit' | 'swapped' = 'auto';

/** Force one way of running transposed matmuls (benchmarks and tests); 'auto' uses the cost model. */
export function setMatMulStrategy(s: 'auto' | 'explicit' | 'swapped'): void {
  strategy = s;
}

/** Weights (right operands) above this many elements fall out of cache in XNNPACK's GEMM. */
const BIG_WEIGHTS = 4 * 1024 * 1024;

/**
 * Cost model (in elements moved) for the two ways of running a transposed matmul on wasm,
 * fitted on measurements (tfjs 4.22 SIMD, Node 20): each transpose costs its element count; a
 * right operand (which XNNPACK packs and re-streams per row block) larger than BIG_WEIGHTS
 * costs M*K*N/128 more. Deterministic, so results do not depend on timing.
 */
export function chooseSwapped(aShape: number[], bShape: number[], tA: boolean, tB: boolean): boolean {
  const ra = aShape.length;
  const rb = bShape.length;
  const M = tA ? aShape[ra - 1] : aShape[ra - 2];
  const K = tA ? aShape[ra - 2] : aShape[ra - 1];
  const N = tB ? bShape[rb - 2] : bShape[rb - 1];
  const penalty = (weights: number) => (weights > BIG_WEIGHTS ? (M * K * N) / 128 : 0);
  const explicit = (tA ? M * K : 0) + (tB ? K * N : 0) + penalty(K * N);
  const swapped = (tB ? 0 : K * N) + (tA ? 0 : M * K) + M * N + penalty(K * M);
  return swapped < explicit;
}

/** x [...batch, r, c] -> [...batch, c, r], computed by the wasm Transpose kernel. */
function swapLastTwo(x: TensorInfo, backend: BackendWasm): TensorInfo {
  const rank = x.shape.length;
  if (rank < 2) throw new Error(`matMul operand must have rank >= 2, got shape [${x.shape}]`);
  const perm = [...Array(rank - 2).keys(), rank - 1, rank - 2];
  const transpose = tf.getKernel('Transpose', BACKEND);
  if (!transpose) throw new Error('wasm Transpose kernel is not registered');
  return transpose.kernelFunc({ inputs: { x }, backend, attrs: { perm } } as never) as TensorInfo;
}

/**
 * UnsortedSegmentSum on the wasm heap: out[s, ...] = sum of x[i, ...] over i with segmentIds[i] == s.
 * segmentIds has the shape of x's leading dims; ids outside [0, numSegments) are dropped (as in TF).
 * x [n..., inner...] -> out [numSegments, inner...]
 */
function unsortedSegmentSum(args: Args): TensorInfo {
  const { backend } = args;
  const x = args.inputs.x!;
  const ids = args.inputs.segmentIds!;
  const numSegments = Number((args.attrs as { numSegments: number }).numSegments);
  if (x.dtype !== 'float32' && x.dtype !== 'int32') throw new Error(`UnsortedSegmentSum on wasm: unsupported dtype ${x.dtype}`);
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
  const idVals = readInts(ids, backend);
  for (let i = 0; i < n; i++) {
    const s = idVals[i];
    if (s < 0 || s >= numSegments) continue;
    const src = i * inner;
    const dst = s * inner;
    for (let j = 0; j < inner; j++) outVals[dst + j] += xVals[src + j];
  }
  return out;
}

function readInts(t: TensorInfo, backend: BackendWasm): Int32Array | Float32Array {
  if (t.dtype === 'int32' || t.dtype === 'float32') return backend.typedArrayFromHeap(t) as Int32Array | Float32Array;
  return Int32Array.from(backend.readSync(t.dataId) as ArrayLike<number>);
}
