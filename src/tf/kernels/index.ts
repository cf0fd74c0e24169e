// The registry of our kernel overrides for the tfjs wasm backend (4.22), one file per kernel as tfjs lays
// out its own, so that models can *train* on wasm, and fast:
//  - UnsortedSegmentSum: missing on wasm; the gradient of tf.gather (Embedding) needs it.
//  - BatchMatMul, _FusedMatMul: by OpenBLAS when the native addon loads (../native.ts); else wasm's kernels
//    without their slow transposed and batched paths.
//  - Slice, Unpack, SplitV: heap slices instead of a full copy of the input per slice.
//  - GatherV2, Tile: block copies through heap views instead of one element at a time.
//  - Identity: shares the buffer instead of copying it.
// With the addon, the fused kernels it brings (softmax cross-entropy, Adam, LSTM cell, attention scores) are
// registered too. `registerWasmKernels()` is idempotent and safe to call before or after the wasm backend
// starts; it must run after the wasm backend module has been imported (src/tf/wasm.ts does both).
import type { KernelOverride } from './types.js';
import { tf } from '../tf.js';
import { registerNativeKernels } from '../native.js';
import { BACKEND } from './types.js';
import { batchMatMulOverride } from './BatchMatMul.js';
import { fusedMatMulOverride } from './_FusedMatMul.js';
import { gatherV2Override } from './GatherV2.js';
import { identityOverride } from './Identity.js';
import { sliceOverride } from './Slice.js';
import { splitVOverride } from './SplitV.js';
import { tileOverride } from './Tile.js';
import { unpackOverride } from './Unpack.js';
import { unsortedSegmentSumOverride } from './UnsortedSegmentSum.js';

/** Every override, by the kernel it replaces (or adds). */
export const WASM_KERNEL_OVERRIDES: readonly KernelOverride[] = [
  unsortedSegmentSumOverride,
  sliceOverride,
  unpackOverride,
  splitVOverride,
  gatherV2Override,
  tileOverride,
  identityOverride,
  batchMatMulOverride,
  fusedMatMulOverride,
];

let registered = false;

/**
 * Install the overrides (no-op when already installed, or when the wasm backend module has not been imported
 * yet). Returns the kernel names registered, with 'BLAS' when the addon's kernels are in.
 */
export function registerWasmKernels(): string[] {
  if (registered || !tf.getKernel('BatchMatMul', BACKEND)) return [];
  registered = true;
  const done: string[] = [];
  for (const k of WASM_KERNEL_OVERRIDES) {
    const stock = tf.getKernel(k.kernelName, BACKEND);
    const config = k.override(stock);
    if (!config) continue;
    if (stock) tf.unregisterKernel(k.kernelName, BACKEND);
    tf.registerKernel(config);
    done.push(k.kernelName);
  }
  if (registerNativeKernels()) done.push('BLAS');
  return done;
}
