// What a kernel override of ours is: the kernel it replaces on the wasm backend and how to build its config
// from the stock one (kept for what the override does not take: strings, other dtypes, odd shapes).
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import type { KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';

export const BACKEND = 'wasm';

/** A kernel function's arguments as the wasm backend passes them. */
export type Args = { inputs: Record<string, TensorInfo | undefined>; backend: BackendWasm; attrs?: NamedAttrMap };

export interface KernelOverride {
  kernelName: string;
  /** The config to register on wasm, given the stock wasm kernel (undefined where wasm has none). */
  override(stock: KernelConfig | undefined): KernelConfig | undefined;
}

/**
 * An override that runs `f` for the dtypes it `handles` (its input `x`, or `value` for Unpack) and the stock
 * kernel for the others. The stock setupFunc is kept: the fallback needs its wasm function bound.
 */
export function heapKernel(
  kernelName: string,
  handles: (dtype: string) => boolean,
  f: (args: Args) => TensorInfo | TensorInfo[],
): KernelOverride {
  return {
    kernelName,
    override(stock) {
      if (!stock) return undefined;
      const kernelFunc = ((args: Args) => {
        const x = (args.inputs.x ?? args.inputs.value)!;
        return handles(x.dtype) ? f(args) : stock.kernelFunc(args as never);
      }) as unknown as KernelFunc;
      return { ...stock, kernelFunc };
    },
  };
}
