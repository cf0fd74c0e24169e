// Which kernels run the wasm backend's matrix products and fused ops, switched through tfjs's own kernel
// registry, for tests and benchmarks that compare the routes in one process (src/ has no switch for it):
//  - 'addon': what is installed (src/tf/kernels/index.ts): products by OpenBLAS and the addon's fused kernels
//    (cross-entropy, Adam, LSTM cell, attention scores) where it loads, else as 'wasm';
//  - 'wasm':  our wasm kernels without the addon: the overrides' wasm path (transposes moved, batches folded)
//    and no fused kernel registered, so the models take their tf-ops path, as CAPTIONER_NATIVE=0 does;
//  - 'stock': tfjs's own wasm BatchMatMul and _FusedMatMul, no fused kernels.
// The stock kernels are captured when the routes are made, which must be before the wasm backend starts (the
// overrides replace them); host-array copies, reductions and Adam (src/tf/copy.ts, src/train/parallel/
// update.ts) are not kernels and keep the addon: compare those against their JS loops directly. The wiring
// (which tf, which wasm kernel builders) is given by the caller: test/helpers/wasm-kernels.ts for tests (src/),
// bench/kernels.ts for the benchmarks (dist/).
import type { KernelConfig, KernelFunc } from '@tensorflow/tfjs';

export type Route = 'addon' | 'wasm' | 'stock';

export interface RouteWiring {
  tf: {
    getKernel(name: string, backend: string): KernelConfig | undefined;
    getKernelsForBackend(backend: string): KernelConfig[];
    registerKernel(config: KernelConfig): void;
    unregisterKernel(name: string, backend: string): void;
  };
  /** src/tf/kernels/BatchMatMul.ts wasmBatchMatMul and _FusedMatMul.ts wasmFusedMatMul. */
  wasmBatchMatMul(stock: KernelFunc): KernelFunc;
  wasmFusedMatMul(stock: KernelFunc): KernelFunc;
}

export interface KernelRoutes {
  /** Switch to `route` (until the next use). */
  use(route: Route): void;
  /** f with `route`, then back to 'addon' (also when f throws or rejects). */
  withRoute<T>(route: Route, f: () => T): T;
}

const MATMULS = ['BatchMatMul', '_FusedMatMul'] as const;
/** The addon's fused kernels are the ones named Captioner* (src/tf/addon.ts). */
const isFused = (name: string) => name.startsWith('Captioner');

export function kernelRoutes(w: RouteWiring): KernelRoutes {
  const { tf } = w;
  if (tf.getKernel('UnsortedSegmentSum', 'wasm'))
    throw new Error('kernel routes: made after the wasm backend started; the stock kernels are already replaced');
  const stock = Object.fromEntries(MATMULS.map((n) => [n, tf.getKernel(n, 'wasm')])) as Record<
    (typeof MATMULS)[number],
    KernelConfig | undefined
  >;
  if (!stock.BatchMatMul || !stock._FusedMatMul)
    throw new Error('kernel routes: import the wasm backend module first (src/tf/wasm.ts loadWasmModule)');
  let installed: KernelConfig[] | undefined; // the matmuls and fused kernels as installed, taken at the first switch
  const replace = (c: KernelConfig) => {
    if (tf.getKernel(c.kernelName, 'wasm')) tf.unregisterKernel(c.kernelName, 'wasm');
    tf.registerKernel(c);
  };
  const use = (route: Route) => {
    if (!installed) {
      if (!tf.getKernel('UnsortedSegmentSum', 'wasm'))
        throw new Error('kernel routes: start the wasm backend first (the overrides are not installed yet)');
      installed = tf
        .getKernelsForBackend('wasm')
        .filter((k) => (MATMULS as readonly string[]).includes(k.kernelName) || isFused(k.kernelName));
    }
    if (route === 'addon') return installed.forEach(replace);
    for (const k of installed)
      if (isFused(k.kernelName) && tf.getKernel(k.kernelName, 'wasm')) tf.unregisterKernel(k.kernelName, 'wasm');
    const wrap = { BatchMatMul: w.wasmBatchMatMul, _FusedMatMul: w.wasmFusedMatMul };
    for (const n of MATMULS)
      replace(route === 'stock' ? stock[n]! : { ...stock[n]!, kernelFunc: wrap[n](stock[n]!.kernelFunc) });
  };
  return {
    use,
    withRoute<T>(route: Route, f: () => T): T {
      use(route);
      let r: T;
      try {
        r = f();
      } catch (e) {
        use('addon');
        throw e;
      }
      if (r instanceof Promise) return r.finally(() => use('addon')) as T;
      use('addon');
      return r;
    },
  };
}
