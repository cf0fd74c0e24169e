// The optional native addon (native/blas.c, built at install by scripts/build-native.mjs): OpenBLAS's
// sgemm and fused training loops, run on the wasm backend's own heap (no copies). With it the wasm
// backend keeps every other kernel but its matrix products run at native BLAS speed, on as many threads
// as OpenBLAS is given, and the cells, scores and losses below run as one native pass each. Without it
// (no compiler at install, no OpenBLAS, CAPTIONER_NATIVE=0) everything runs on wasm's own kernels, as
// before; `addonStatus()` says which and why.
//
// Owns: finding and loading the addon and the BLAS library, the BLAS thread count, and the wasm kernels
// that call it (BatchMatMul / _FusedMatMul routes used by ./kernels/, CaptionerSoftmaxXent, and the
// fused Adam update CaptionerAdam with its gradient norm, used by src/train/adam.ts, and the LSTM cell
// CaptionerLstmCell with its gradient, used by src/model/ops.ts, and the attention scores
// CaptionerAttentionScores with theirs, used by the attention decoder), and the host-array reduction,
// Adam and copy of data-parallel training (src/train/parallel/reduce.ts, src/train/adam.ts, src/tf/copy.ts).
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';
import { tf } from './tf.js';
import { heapOffset as offsetOf, matMulDims, sizeOf } from './heap.js';

const require = createRequire(import.meta.url);

interface Addon {
  load(
    paths: string[],
    threads: number,
  ): { ok: true; library: string; config: string; threads: number } | { ok: false; reason: string };
  setThreads(n: number): number;
  shareThreads(delta: number): number;
  threadInfo(): BlasThreadInfo;
  sgemm(
    heap: ArrayBuffer,
    tA: boolean,
    tB: boolean,
    M: number,
    N: number,
    K: number,
    alpha: number,
    aOff: number,
    lda: number,
    bOff: number,
    ldb: number,
    beta: number,
    cOff: number,
    ldc: number,
  ): void;
  xent(
    heap: ArrayBuffer,
    zOff: number,
    biasOff: number,
    targetsOff: number,
    M: number,
    V: number,
    scale: number,
    dOff: number,
    dbOff: number,
  ): number;
  sumSquares(heap: ArrayBuffer, off: number, n: number): number;
  adam(
    heap: ArrayBuffer,
    xOff: number,
    gOff: number,
    mOff: number,
    vOff: number,
    n: number,
    gscale: number,
    beta1: number,
    beta2: number,
    lr: number,
    eps: number,
    xOut: number,
    mOut: number,
    vOut: number,
  ): void;
  reduceBlocks(
    grads: Float32Array,
    total: number,
    parts: number,
    from: number,
    to: number,
    block: number,
    sums: Float64Array,
  ): void;
  adamArrays(
    w: Float32Array,
    m: Float32Array,
    v: Float32Array,
    g: Float32Array,
    from: number,
    to: number,
    gscale: number,
    beta1: number,
    beta2: number,
    lr: number,
    eps: number,
  ): void;
  copy(dst: Float32Array, src: Float32Array): void;
  attn(
    heap: ArrayBuffer,
    encOff: number,
    attOff: number,
    wOff: number,
    N: number,
    P: number,
    A: number,
    sOut: number,
  ): void;
  attnGrad(
    heap: ArrayBuffer,
    encOff: number,
    attOff: number,
    wOff: number,
    dsOff: number,
    N: number,
    P: number,
    A: number,
    dEncOut: number,
    dAttOut: number,
    dwOut: number,
  ): void;
  lstm(
    heap: ArrayBuffer,
    zxOff: number,
    recOff: number,
    cOff: number,
    N: number,
    U: number,
    hOut: number,
    cOut: number,
  ): void;
  lstmGrad(
    heap: ArrayBuffer,
    zxOff: number,
    recOff: number,
    cOff: number,
    c2Off: number,
    dhOff: number,
    dc2Off: number,
    N: number,
    U: number,
    dzOut: number,
    dcOut: number,
  ): void;
}

export interface AddonStatus {
  /** The addon and a BLAS library are loaded and the wasm matrix products use them. */
  available: boolean;
  /** The BLAS library file that was opened. */
  library?: string;
  /** What the library says of itself (OpenBLAS: version, build, core type). */
  config?: string;
  /** Why it is not available (addon not built, no OpenBLAS, turned off). */
  reason?: string;
}

/** The kernel name of the fused softmax cross-entropy (registered on wasm only when the addon loads). */
export const XENT_KERNEL = 'CaptionerSoftmaxXent';

/** Where scripts/build-native.mjs leaves the addon: <package>/native/build/Release (dist/tf -> ../..). */
export function addonPath(): string {
  return path.resolve(
    path.dirname(fileURLToPath(import.meta.url)),
    '..',
    '..',
    'native',
    'build',
    'Release',
    'captioner_native.node',
  );
}

/** Library names tried in order (CAPTIONER_BLAS first: a path to another CBLAS, e.g. MKL's). */
function libraryCandidates(): string[] {
  const own = process.env.CAPTIONER_BLAS ? [process.env.CAPTIONER_BLAS] : [];
  if (process.platform === 'darwin')
    return [
      ...own,
      'libopenblas.dylib',
      '/opt/homebrew/opt/openblas/lib/libopenblas.dylib',
      '/usr/local/opt/openblas/lib/libopenblas.dylib',
    ];
  return [...own, 'libopenblas.so.0', 'libopenblas.so'];
}

let addon: Addon | undefined;
let status: AddonStatus | undefined;

/** Load the addon and BLAS once per thread (each worker thread loads its own copy of the binding). */
export function addonStatus(): AddonStatus {
  if (status) return status;
  if (process.env.CAPTIONER_NATIVE === '0')
    return (status = { available: false, reason: 'turned off (CAPTIONER_NATIVE=0)' });
  const file = addonPath();
  if (!existsSync(file))
    return (status = {
      available: false,
      reason: 'native addon not built (needs a C compiler at install: npm rebuild captioner)',
    });
  try {
    const a = require(file) as Addon;
    const r = a.load(libraryCandidates(), 0);
    if (!r.ok)
      return (status = {
        available: false,
        reason: `no OpenBLAS found (${r.reason}); install it, e.g. apt-get install libopenblas0`,
      });
    addon = a;
    return (status = { available: true, library: r.library, config: r.config.trim() });
  } catch (e) {
    return (status = {
      available: false,
      reason: `native addon failed to load: ${(e as Error).message.split('\n')[0]}`,
    });
  }
}

/** Whether the wasm matrix products go to BLAS (the addon and a BLAS library loaded, CAPTIONER_NATIVE is not 0). */
export function addonActive(): boolean {
  return addonStatus().available;
}

/**
 * The BLAS thread policy of this process (native/blas.c holds it, under one mutex, for every JS thread):
 * OpenBLAS keeps one thread count per process, shared by the main thread and every worker, so it is never
 * saved and restored around a call while another thread computes (that raced between workers). The
 * first load fixes the policy P at what OpenBLAS starts with (OPENBLAS_NUM_THREADS, else every core);
 * setBlasThreads changes it for the whole process (benchmarks). While one JS thread holds the addon,
 * OpenBLAS runs on P threads and products below 64M multiply-adds on the calling thread alone. While
 * several do, or workers are declared by shareBlasThreads (data-parallel training, the decoding pool),
 * every product runs on its calling thread (OpenBLAS on 1 thread): the workers are the parallelism, and
 * a worker's product then gives the main thread's bytes for every product below 64M (OpenBLAS's result
 * depends on its thread count).
 */
export interface BlasThreadInfo {
  /** P: the process's BLAS threads (0: unknown, a CBLAS other than OpenBLAS). */
  policy: number;
  /** The count OpenBLAS has now. */
  inEffect: number;
  /** Worker threads declared by shareBlasThreads that are running now. */
  workers: number;
  /** JS threads (main and workers) in this process that hold the addon. */
  threads: number;
  /** The count OpenBLAS itself reports (-1: a CBLAS other than OpenBLAS). */
  blas: number;
}

/** The policy and the count in effect; undefined without the addon. */
export function blasThreadInfo(): BlasThreadInfo | undefined {
  if (!addonStatus().available || !addon) return undefined;
  return addon.threadInfo();
}

/**
 * Set the process's BLAS thread policy (every thread's products, benchmarks' single-thread runs); returns
 * the policy before (0 when unknown or without the addon).
 */
export function setBlasThreads(n: number): number {
  if (!addonStatus().available || !addon) return 0;
  return addon.setThreads(Math.min(1024, Math.max(1, Math.floor(n))));
}

/**
 * Declare `workers` threads that each run matrix products at once (data-parallel training, the decoding
 * pool): until the undo, OpenBLAS runs every product on its calling thread (1 thread), so N workers use N
 * cores. Call it on the thread that starts them, before they start; returns the undo (idempotent), to
 * call once they are gone. Declarations add up and undo in any order. A no-op without the addon.
 */
export function shareBlasThreads(workers: number): () => void {
  if (!addonStatus().available || !addon) return () => {};
  const n = Math.min(1024, Math.max(1, Math.floor(workers)));
  const a = addon;
  a.shareThreads(n);
  let undone = false;
  return () => {
    if (undone) return;
    undone = true;
    a.shareThreads(-n);
  };
}

/** The process's BLAS thread policy: what the addon fixed at load, else OPENBLAS_NUM_THREADS, else every core. */
export function defaultBlasThreads(): number {
  const info = blasThreadInfo();
  if (info && info.policy > 0) return info.policy;
  const env = Number(process.env.OPENBLAS_NUM_THREADS ?? process.env.OMP_NUM_THREADS);
  return Number.isInteger(env) && env > 0 ? env : os.availableParallelism();
}

type Args = { inputs: Record<string, TensorInfo | undefined>; backend: BackendWasm; attrs?: NamedAttrMap };

/**
 * op(A) op(B) for float32 operands with batch dims that are equal or 1 (broadcast), by BLAS on the heap;
 * undefined when this case is not one it takes (the caller then runs wasm's kernel).
 * a [...batchA, M, K] (or [..., K, M] transposed), b [...batchB, K, N] (or [..., N, K]) -> [...batch, M, N]
 */
export function addonMatMul(args: Args): TensorInfo | undefined {
  if (!addonActive() || !addon) return undefined;
  const a = args.inputs.a!;
  const b = args.inputs.b!;
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) return undefined;
  const { tA, tB, M, K, N, batchA, batchB } = matMulDims(a, b, args.attrs);
  const rb = b.shape.length;
  if ((tB ? b.shape[rb - 1] : b.shape[rb - 2]) !== K) return undefined; // let the stock kernel word the error
  if (batchA !== batchB && batchA !== 1 && batchB !== 1) return undefined;
  const batchShape = tf.broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const batch = sizeOf(batchShape);
  // both operands broadcast along the batch only when they are equal or 1 (checked above) and the
  // broadcast shape has as many entries as the larger of them
  if (batch !== Math.max(batchA, batchB)) return undefined;
  const backend = args.backend;
  const out = backend.makeOutput([...batchShape, M, N], 'float32');
  if (M * N === 0) return out;
  // the heap after makeOutput: an allocation may have grown (and replaced) it
  const heap = backend.wasm.HEAPU8.buffer as ArrayBuffer;
  const ao = offsetOf(backend, a);
  const bo = offsetOf(backend, b);
  const co = offsetOf(backend, out);
  if (K === 0) {
    new Float32Array(heap, co, batch * M * N).fill(0);
    return out;
  }
  for (let i = 0; i < batch; i++) {
    addon.sgemm(
      heap,
      tA,
      tB,
      M,
      N,
      K,
      1,
      ao + (batchA === 1 ? 0 : i * M * K * 4),
      tA ? M : K,
      bo + (batchB === 1 ? 0 : i * K * N * 4),
      tB ? K : N,
      0,
      co + i * M * N * 4,
      N,
    );
  }
  return out;
}

/** The activations _FusedMatMul may carry, by the wasm kernel that applies each. */
const ACTIVATIONS: Record<string, string> = {
  relu: 'Relu',
  relu6: 'Relu6',
  elu: 'Elu',
  sigmoid: 'Sigmoid',
  leakyrelu: 'LeakyRelu',
  prelu: 'Prelu',
};

/** _FusedMatMul: the product by BLAS, then wasm's Add for the bias and its kernel for the activation. */
export function addonFusedMatMul(args: Args): TensorInfo | undefined {
  const attrs = (args.attrs ?? {}) as NamedAttrMap & { activation?: string; leakyreluAlpha?: number };
  const activation = attrs.activation ?? 'linear';
  if (activation !== 'linear' && !ACTIVATIONS[activation]) return undefined;
  const product = addonMatMul(args);
  if (!product) return undefined;
  const backend = args.backend;
  let y = product;
  try {
    const bias = args.inputs.bias;
    if (bias) {
      const next = run('Add', { a: y, b: bias }, {}, backend);
      backend.disposeData(y.dataId);
      y = next;
    }
    if (activation !== 'linear') {
      const inputs: Record<string, TensorInfo> =
        activation === 'prelu' ? { x: y, alpha: args.inputs.preluActivationWeights! } : { x: y };
      const next = run(
        ACTIVATIONS[activation],
        inputs,
        activation === 'leakyrelu' ? { alpha: attrs.leakyreluAlpha ?? 0.2 } : {},
        backend,
      );
      backend.disposeData(y.dataId);
      y = next;
    }
    return y;
  } catch (e) {
    backend.disposeData(y.dataId);
    throw e;
  }
}

function run(
  kernelName: string,
  inputs: Record<string, TensorInfo>,
  attrs: NamedAttrMap,
  backend: BackendWasm,
): TensorInfo {
  const k = tf.getKernel(kernelName, 'wasm');
  if (!k) throw new Error(`wasm kernel ${kernelName} is not registered`);
  return k.kernelFunc({ inputs, backend, attrs } as never) as TensorInfo;
}

/**
 * CaptionerSoftmaxXent: inputs logits z [M, V] (without bias), bias [V], targets int32 [M]; attr scale.
 * Outputs: the summed cross-entropy of softmax(z + bias) over the rows (a scalar), d = scale (softmax -
 * onehot) [M, V], and db = the column sums of d [V]. One pass over the logits, in native code.
 */
const xentKernel = ((args: Args) => {
  const { backend } = args;
  const z = args.inputs.logits!;
  const bias = args.inputs.bias!;
  const targets = args.inputs.targets!;
  const scale = Number((args.attrs as { scale?: number }).scale ?? 1);
  if (!addon) throw new Error(`${XENT_KERNEL}: the native addon is not loaded`);
  if (z.dtype !== 'float32' || bias.dtype !== 'float32' || targets.dtype !== 'int32')
    throw new Error(`${XENT_KERNEL}: expected float32 logits and bias, int32 targets`);
  const [M, V] = z.shape;
  if (z.shape.length !== 2 || sizeOf(bias.shape) !== V || sizeOf(targets.shape) !== M)
    throw new Error(`${XENT_KERNEL}: shapes [${z.shape}], [${bias.shape}], [${targets.shape}] do not fit`);
  const loss = backend.makeOutput([], 'float32');
  const d = backend.makeOutput([M, V], 'float32');
  const db = backend.makeOutput([V], 'float32');
  const heap = backend.wasm.HEAPU8.buffer as ArrayBuffer;
  const total = addon.xent(
    heap,
    offsetOf(backend, z),
    offsetOf(backend, bias),
    offsetOf(backend, targets),
    M,
    V,
    scale,
    offsetOf(backend, d),
    offsetOf(backend, db),
  );
  (backend.typedArrayFromHeap(loss) as Float32Array)[0] = total;
  return [loss, d, db];
}) as unknown as KernelFunc;

/** The kernel name of the fused Adam update (registered on wasm only when the addon loads). */
export const ADAM_KERNEL = 'CaptionerAdam';

/**
 * CaptionerAdam: inputs x (the weight), g (its gradient), m, v (the moments), all float32 of one size;
 * attrs gscale (clipping factor), beta1, beta2, lr (bias-corrected), epsilon. Outputs x', m', v':
 * g' = gscale g; m' = beta1 m + (1 - beta1) g'; v' = beta2 v + (1 - beta2) g'^2; x' = x - lr m' / (sqrt(v') + eps).
 * One pass in native code where tfjs takes a dozen kernels.
 */
const adamKernel = ((args: Args) => {
  const { backend } = args;
  const { x, g, m, v } = args.inputs as Record<'x' | 'g' | 'm' | 'v', TensorInfo>;
  const a = args.attrs as { gscale: number; beta1: number; beta2: number; lr: number; epsilon: number };
  if (!addon) throw new Error(`${ADAM_KERNEL}: the native addon is not loaded`);
  const n = sizeOf(x.shape);
  for (const t of [x, g, m, v]) {
    if (t.dtype !== 'float32' || sizeOf(t.shape) !== n)
      throw new Error(`${ADAM_KERNEL}: expected four float32 arrays of ${n} values`);
  }
  const outs = [
    backend.makeOutput(x.shape, 'float32'),
    backend.makeOutput(x.shape, 'float32'),
    backend.makeOutput(x.shape, 'float32'),
  ];
  if (!adamFactorsFinite(ADAM_KERNEL, a)) {
    // g' = NaN g: every moment and weight is NaN
    for (const o of outs) (backend.typedArrayFromHeap(o) as Float32Array).fill(NaN);
    return outs;
  }
  const heap = backend.wasm.HEAPU8.buffer as ArrayBuffer;
  addon.adam(
    heap,
    offsetOf(backend, x),
    offsetOf(backend, g),
    offsetOf(backend, m),
    offsetOf(backend, v),
    n,
    a.gscale,
    a.beta1,
    a.beta2,
    a.lr,
    a.epsilon,
    ...(outs.map((o) => offsetOf(backend, o)) as [number, number, number]),
  );
  return outs;
}) as unknown as KernelFunc;

/**
 * Whether Adam's factors are finite, as the addon requires (native/blas.c refuses NaN and infinities).
 * The clipping scale is NaN when the gradients are not finite (their norm is NaN); the update is then NaN
 * throughout, as IEEE arithmetic gives it, and training stops at its loss check. Other non-finite factors
 * are a caller's bug.
 */
function adamFactorsFinite(
  kernel: string,
  a: { gscale: number; beta1: number; beta2: number; lr: number; epsilon: number },
): boolean {
  for (const k of ['beta1', 'beta2', 'lr', 'epsilon'] as const) {
    if (!Number.isFinite(a[k])) throw new Error(`${kernel}: ${k} must be finite, got ${a[k]}`);
  }
  if (Number.isNaN(a.gscale)) return false;
  if (!Number.isFinite(a.gscale)) throw new Error(`${kernel}: gscale must be finite or NaN, got ${a.gscale}`);
  return true;
}

/** The sum of squares of float32 tensors on the wasm heap (in double; for the global gradient norm). */
export function sumSquares(ts: tf.Tensor[]): number {
  if (!addon || tf.getBackend() !== 'wasm') throw new Error('sumSquares: needs the native addon on wasm');
  const backend = tf.backend() as unknown as BackendWasm;
  let total = 0;
  for (const t of ts) {
    if (t.dtype !== 'float32') throw new Error('sumSquares: float32 only');
    if (t.size > 0)
      total += addon.sumSquares(
        backend.wasm.HEAPU8.buffer as ArrayBuffer,
        offsetOf(backend, t as unknown as TensorInfo),
        t.size,
      );
  }
  return total;
}

/** The kernel names of the fused LSTM cell and its backward pass (registered on wasm only when the addon loads). */
export const LSTM_KERNEL = 'CaptionerLstmCell';
export const LSTM_GRAD_KERNEL = 'CaptionerLstmCellGrad';

/** Checks the cell's operands: zx, rec [N, 4U] and every other one [N, U], all float32. */
function lstmDims(name: string, wide: TensorInfo[], narrow: TensorInfo[]): [number, number] {
  const [N, U4] = wide[0].shape;
  const U = U4 / 4;
  const fits = (t: TensorInfo, cols: number) =>
    t.dtype === 'float32' && t.shape.length === 2 && t.shape[0] === N && t.shape[1] === cols;
  if (!Number.isInteger(U) || !wide.every((t) => fits(t, U4)) || !narrow.every((t) => fits(t, U))) {
    throw new Error(
      `${name}: expected float32 [N, 4U] pre-activations and [N, U] states, got ${[...wide, ...narrow].map((t) => `[${t.shape}]`).join(', ')}`,
    );
  }
  return [N, U];
}

/**
 * CaptionerLstmCell: inputs zx, rec [N, 4U] (their sum is the gates' pre-activation, gates i, f, g, o) and
 * c [N, U]. Outputs h = o tanh(c') and c' = f c + i g, both [N, U]. One pass in native code.
 */
const lstmKernel = ((args: Args) => {
  const { backend } = args;
  const { zx, rec, c } = args.inputs as Record<'zx' | 'rec' | 'c', TensorInfo>;
  if (!addon) throw new Error(`${LSTM_KERNEL}: the native addon is not loaded`);
  const [N, U] = lstmDims(LSTM_KERNEL, [zx, rec], [c]);
  const h = backend.makeOutput([N, U], 'float32');
  const c2 = backend.makeOutput([N, U], 'float32');
  addon.lstm(
    backend.wasm.HEAPU8.buffer as ArrayBuffer,
    offsetOf(backend, zx),
    offsetOf(backend, rec),
    offsetOf(backend, c),
    N,
    U,
    offsetOf(backend, h),
    offsetOf(backend, c2),
  );
  return [h, c2];
}) as unknown as KernelFunc;

/**
 * CaptionerLstmCellGrad: inputs zx, rec, c (the cell's inputs), c2 (its new cell state), dh and dc2 (the
 * gradients reaching h and c'). Outputs dz [N, 4U] (the gradient of zx and of rec) and dc [N, U].
 */
const lstmGradKernel = ((args: Args) => {
  const { backend } = args;
  const { zx, rec, c, c2, dh, dc2 } = args.inputs as Record<'zx' | 'rec' | 'c' | 'c2' | 'dh' | 'dc2', TensorInfo>;
  if (!addon) throw new Error(`${LSTM_GRAD_KERNEL}: the native addon is not loaded`);
  const [N, U] = lstmDims(LSTM_GRAD_KERNEL, [zx, rec], [c, c2, dh, dc2]);
  const dz = backend.makeOutput([N, 4 * U], 'float32');
  const dc = backend.makeOutput([N, U], 'float32');
  const o = (t: TensorInfo) => offsetOf(backend, t);
  addon.lstmGrad(
    backend.wasm.HEAPU8.buffer as ArrayBuffer,
    o(zx),
    o(rec),
    o(c),
    o(c2),
    o(dh),
    o(dc2),
    N,
    U,
    o(dz),
    o(dc),
  );
  return [dz, dc];
}) as unknown as KernelFunc;

/** The cell's gradient for autograd: both pre-activation inputs get dz, the old cell state dc. */
const lstmGradConfig = {
  kernelName: LSTM_KERNEL,
  inputsToSave: ['zx', 'rec', 'c'],
  outputsToSave: [false, true],
  gradFunc: (dys: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
    const [dh, dc2] = dys as tf.Tensor[];
    const [zx, rec, c, c2] = saved;
    const [dz, dc] = tf.engine().runKernel(LSTM_GRAD_KERNEL, { zx, rec, c, c2, dh, dc2 }) as tf.Tensor[];
    return { zx: () => dz, rec: () => tf.clone(dz), c: () => dc };
  },
};

/** The kernel names of the fused attention scores and their backward pass (wasm with the addon only). */
export const ATTENTION_KERNEL = 'CaptionerAttentionScores';
export const ATTENTION_GRAD_KERNEL = 'CaptionerAttentionScoresGrad';

/** Checks enc [N, P, A], att [N, A], w [A] (or [A, 1]), float32; returns [N, P, A]. */
function attentionDims(name: string, enc: TensorInfo, att: TensorInfo, w: TensorInfo): [number, number, number] {
  const [N, P, A] = enc.shape;
  const ok =
    enc.shape.length === 3 &&
    [enc, att, w].every((t) => t.dtype === 'float32') &&
    att.shape.length === 2 &&
    att.shape[0] === N &&
    att.shape[1] === A &&
    sizeOf(w.shape) === A;
  if (!ok)
    throw new Error(
      `${name}: expected float32 enc [N, P, A], att [N, A], w [A], got [${enc.shape}], [${att.shape}], [${w.shape}]`,
    );
  return [N, P, A];
}

/**
 * CaptionerAttentionScores: inputs enc [N, P, A], att [N, A], w [A] (or [A, 1]); output the scores
 * s [N, P], s[n, p] = w . tanh(enc[n, p] + att[n]). One pass in native code.
 */
const attentionKernel = ((args: Args) => {
  const { backend } = args;
  const { enc, att, w } = args.inputs as Record<'enc' | 'att' | 'w', TensorInfo>;
  if (!addon) throw new Error(`${ATTENTION_KERNEL}: the native addon is not loaded`);
  const [N, P, A] = attentionDims(ATTENTION_KERNEL, enc, att, w);
  const s = backend.makeOutput([N, P], 'float32');
  addon.attn(
    backend.wasm.HEAPU8.buffer as ArrayBuffer,
    offsetOf(backend, enc),
    offsetOf(backend, att),
    offsetOf(backend, w),
    N,
    P,
    A,
    offsetOf(backend, s),
  );
  return s;
}) as unknown as KernelFunc;

/** CaptionerAttentionScoresGrad: inputs enc, att, w and ds [N, P]; outputs dEnc [N, P, A], dAtt [N, A], dw (w's shape). */
const attentionGradKernel = ((args: Args) => {
  const { backend } = args;
  const { enc, att, w, ds } = args.inputs as Record<'enc' | 'att' | 'w' | 'ds', TensorInfo>;
  if (!addon) throw new Error(`${ATTENTION_GRAD_KERNEL}: the native addon is not loaded`);
  const [N, P, A] = attentionDims(ATTENTION_GRAD_KERNEL, enc, att, w);
  if (ds.dtype !== 'float32' || sizeOf(ds.shape) !== N * P)
    throw new Error(`${ATTENTION_GRAD_KERNEL}: expected float32 ds [${N}, ${P}], got [${ds.shape}]`);
  const outs = [
    backend.makeOutput([N, P, A], 'float32'),
    backend.makeOutput([N, A], 'float32'),
    backend.makeOutput(w.shape, 'float32'),
  ];
  const o = (t: TensorInfo) => offsetOf(backend, t);
  addon.attnGrad(
    backend.wasm.HEAPU8.buffer as ArrayBuffer,
    o(enc),
    o(att),
    o(w),
    o(ds),
    N,
    P,
    A,
    o(outs[0]),
    o(outs[1]),
    o(outs[2]),
  );
  return outs;
}) as unknown as KernelFunc;

const attentionGradConfig = {
  kernelName: ATTENTION_KERNEL,
  inputsToSave: ['enc', 'att', 'w'],
  gradFunc: (ds: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
    const [enc, att, w] = saved;
    const [dEnc, dAtt, dw] = tf
      .engine()
      .runKernel(ATTENTION_GRAD_KERNEL, { enc, att, w, ds: ds as tf.Tensor }) as tf.Tensor[];
    return { enc: () => dEnc, att: () => dAtt, w: () => dw };
  },
};

/**
 * Host-array versions for data-parallel training's flat vectors (src/train/parallel/reduce.ts, src/train/adam.ts), on plain or
 * shared Float32Arrays: the blockwise gradient reduction with its per-block sums of squares, and Adam in
 * place. Undefined / false when the addon is not loaded in this thread, and false for a NaN clipping scale
 * (the caller's loop then gives the NaN update).
 */
export function addonReduceBlocks(
  grads: Float32Array,
  total: number,
  parts: number,
  from: number,
  to: number,
  block: number,
): Float64Array | undefined {
  if (!addonActive() || !addon) return undefined;
  const sums = new Float64Array(Math.ceil((to - from) / block));
  addon.reduceBlocks(grads, total, parts, from, to, block, sums);
  return sums;
}

export function addonAdamArrays(
  w: Float32Array,
  m: Float32Array,
  v: Float32Array,
  g: Float32Array,
  from: number,
  to: number,
  a: { gscale: number; beta1: number; beta2: number; lr: number; epsilon: number },
): boolean {
  // a NaN scale (non-finite gradients): the caller's loop gives the NaN update
  if (!addonActive() || !addon || !adamFactorsFinite('adamArrays', a)) return false;
  addon.adamArrays(w, m, v, g, from, to, a.gscale, a.beta1, a.beta2, a.lr, a.epsilon);
  return true;
}

/** memmove of src over dst (Float32Arrays of one length, plain or shared buffers); false when the addon is not active. */
export function addonCopy(dst: Float32Array, src: Float32Array): boolean {
  if (!addonActive() || !addon) return false;
  addon.copy(dst, src);
  return true;
}

/** Register the native kernels on wasm when the addon is there (idempotent). */
export function registerAddonKernels(): boolean {
  if (!addonStatus().available) return false;
  if (!tf.getKernel(XENT_KERNEL, 'wasm'))
    tf.registerKernel({ kernelName: XENT_KERNEL, backendName: 'wasm', kernelFunc: xentKernel });
  if (!tf.getKernel(ADAM_KERNEL, 'wasm'))
    tf.registerKernel({ kernelName: ADAM_KERNEL, backendName: 'wasm', kernelFunc: adamKernel });
  if (!tf.getKernel(LSTM_KERNEL, 'wasm'))
    tf.registerKernel({ kernelName: LSTM_KERNEL, backendName: 'wasm', kernelFunc: lstmKernel });
  if (!tf.getKernel(LSTM_GRAD_KERNEL, 'wasm'))
    tf.registerKernel({ kernelName: LSTM_GRAD_KERNEL, backendName: 'wasm', kernelFunc: lstmGradKernel });
  if (!tf.getGradient(LSTM_KERNEL)) tf.registerGradient(lstmGradConfig);
  if (!tf.getKernel(ATTENTION_KERNEL, 'wasm'))
    tf.registerKernel({ kernelName: ATTENTION_KERNEL, backendName: 'wasm', kernelFunc: attentionKernel });
  if (!tf.getKernel(ATTENTION_GRAD_KERNEL, 'wasm'))
    tf.registerKernel({ kernelName: ATTENTION_GRAD_KERNEL, backendName: 'wasm', kernelFunc: attentionGradKernel });
  if (!tf.getGradient(ATTENTION_KERNEL)) tf.registerGradient(attentionGradConfig);
  return true;
}

/** Whether a native kernel (XENT_KERNEL, ADAM_KERNEL, LSTM_KERNEL, ATTENTION_KERNEL) can run on the active backend now. */
export function addonKernelReady(kernelName: string): boolean {
  return addonActive() && tf.getBackend() === 'wasm' && tf.getKernel(kernelName, 'wasm') != null;
}
