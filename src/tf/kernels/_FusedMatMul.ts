// _FusedMatMul (matmul + bias + activation, what tf.layers' Dense runs) for the tfjs wasm backend (4.22).
// With the native addon (../native.ts) the product runs by OpenBLAS and wasm's own kernels add the bias and
// the activation; otherwise the stock kernel runs, with transposed operands moved first (./untransposed.ts;
// never swapped, since the bias is per column of the result).
import type { KernelFunc } from '@tensorflow/tfjs';
import { nativeFusedMatMul } from '../native.js';
import type { Args, KernelOverride } from './types.js';
import { untransposed } from './untransposed.js';

/** _FusedMatMul on wasm's own kernels (what runs without the addon), given the stock kernel. */
export function wasmFusedMatMul(kernelFunc: KernelFunc): KernelFunc {
  return untransposed(kernelFunc, false);
}

export const fusedMatMulOverride: KernelOverride = {
  kernelName: '_FusedMatMul',
  override(stock) {
    if (!stock) return undefined;
    const onWasm = wasmFusedMatMul(stock.kernelFunc);
    return { ...stock, kernelFunc: ((args: Args) => nativeFusedMatMul(args) ?? onWasm(args as never)) as KernelFunc };
  },
};
