// Matrix products with transposed operands on the tfjs wasm backend (4.22): the stock BatchMatMul and
// _FusedMatMul take a slow non-XNNPACK path when transposeA/transposeB is set (10-40x slower than the plain
// case). untransposed() wraps a matmul kernel so it only ever sees plain operands: the wasm Transpose kernel
// moves them, and a deterministic cost model picks A·B or (Bᵀ·Aᵀ)ᵀ. Used by ./BatchMatMul.ts and
// ./_FusedMatMul.ts.
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';
import { tf } from '../tf.js';
import { BACKEND, type Args } from './types.js';

/**
 * Wrap a matmul kernel so transposed operands never reach the kernel's slow transposed path.
 * C = op(A)·op(B) is computed either "explicit" (transpose the flagged operands, then A·B) or
 * "swapped" (C = (Bᵀ·Aᵀ)ᵀ, which needs transposes of the *unflagged* operands and of the result);
 * `chooseSwapped` picks the cheaper. Temporaries are freed before returning.
 * `allowSwap` false forces the explicit form (used for _FusedMatMul, whose bias is per column of C).
 */
export function untransposed(kernelFunc: KernelFunc, allowSwap: boolean): KernelFunc {
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
      if (allowSwap && chooseSwapped(a.shape, b.shape, tA, tB)) {
        // left = Bᵀ [.., N, K], right = Aᵀ [.., K, M]; result [.., N, M] -> transpose -> [.., M, N]
        const left = tB ? b : track(temps, swapLastTwo(b, backend));
        const right = tA ? a : track(temps, swapLastTwo(a, backend));
        const ct = track(
          temps,
          kernelFunc({ inputs: { ...args.inputs, a: left, b: right }, backend, attrs: plain } as never) as TensorInfo,
        );
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

export function track(temps: TensorInfo[], t: TensorInfo): TensorInfo {
  temps.push(t);
  return t;
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
export function swapLastTwo(x: TensorInfo, backend: BackendWasm): TensorInfo {
  const rank = x.shape.length;
  if (rank < 2) throw new Error(`matMul operand must have rank >= 2, got shape [${x.shape}]`);
  const perm = [...Array(rank - 2).keys(), rank - 1, rank - 2];
  const transpose = tf.getKernel('Transpose', BACKEND);
  if (!transpose) throw new Error('wasm Transpose kernel is not registered');
  return transpose.kernelFunc({ inputs: { x }, backend, attrs: { perm } } as never) as TensorInfo;
}
