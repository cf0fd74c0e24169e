// Identity without a copy: every tensor autograd saves for the backward pass goes through Identity, and the
// stock wasm kernel copies it. The output shares x's buffer (reference counted; wasm tensors are never
// written in place), as the cpu backend and wasm's own Reshape do. Strings keep the stock kernel.
import type { KernelFunc } from '@tensorflow/tfjs';
import type { Args, KernelOverride } from './types.js';

export const identityOverride: KernelOverride = {
  kernelName: 'Identity',
  override(stock) {
    if (!stock) return undefined;
    const kernelFunc = ((args: Args) => {
      const x = args.inputs.x!;
      if (x.dtype === 'string') return stock.kernelFunc(args as never);
      args.backend.incRef(x.dataId);
      return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
    }) as KernelFunc;
    return { ...stock, kernelFunc };
  },
};
