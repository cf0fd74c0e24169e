// The serial part of a data-parallel step: the fixed-order gradient reduction with its blockwise squared
// norm, and clipped Adam, over ranges of the flat vectors. Run by the native addon where it loads (one
// vectorised pass each, about 10x flat.ts's loops), else by flat.ts's loops. One thread's choice is the
// same every step, and the main thread and the workers load the same addon, so a configuration still gives
// the same bytes run after run, and sharded updates the bytes of a main-thread update.
import { nativeAdamArrays, nativeReduceBlocks } from '../../tf/native.js';
import { BLOCK, adamRange, reduceRange, type AdamHyper } from './flat.js';

/** flat.ts reduceRange: sum `parts` gradient regions into region 0 over [from, to); per-block sums of squares. */
export function reduceGradients(grads: Float32Array, total: number, parts: number, from: number, to: number): Float64Array {
  return nativeReduceBlocks(grads, total, parts, from, to, BLOCK) ?? reduceRange(grads, total, parts, from, to);
}

/** flat.ts adamRange: clipped Adam in place over [from, to) of the weights and moments. */
export function applyAdam(h: AdamHyper, w: Float32Array, m: Float32Array, v: Float32Array, g: Float32Array, from: number, to: number, scale: number, lr: number): void {
  if (nativeAdamArrays(w, m, v, g, from, to, { gscale: scale, beta1: h.beta1, beta2: h.beta2, lr, epsilon: h.epsilon })) return;
  adamRange(h, w, m, v, g, from, to, scale, lr);
}
