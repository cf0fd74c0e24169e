// kernelRoutes (./kernel-routes.ts) wired to src/: import this BEFORE the wasm backend starts (initBackend
// 'wasm' installs the overrides and replaces the stock kernels it captures).
//   import { routes } from '../helpers/wasm-kernels.js';
//   const [blas, wasm] = [f(), routes.withRoute('wasm', f)];
import { tf } from '../../src/tf/tf.js';
import { loadWasmModule } from '../../src/tf/wasm.js';
import { wasmBatchMatMul } from '../../src/tf/kernels/BatchMatMul.js';
import { wasmFusedMatMul } from '../../src/tf/kernels/_FusedMatMul.js';
import { kernelRoutes } from './kernel-routes.js';

await loadWasmModule();

export const routes = kernelRoutes({ tf, wasmBatchMatMul, wasmFusedMatMul });
