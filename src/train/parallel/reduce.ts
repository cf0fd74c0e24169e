// The data-parallel gradient reduction, defined once: the workers' gradient regions summed into region 0 in
// region order, and the float64 sum of squares of each BLOCK of the result, from which normOf gives the
// global norm (blocks added in order). reduceLoop is the reference; reduceGradients runs the native addon's C
// loop where it loads (one vectorised pass, about 10x faster) and reduceLoop otherwise, and
// test/train/parallel/reduce.test.ts checks the C loop against reduceLoop. One thread's choice is the same
// every step, and the main thread and the workers load the same addon, so a configuration gives the same bytes
// run after run, and a partitioned reduction the bytes of a whole one.
import { addonReduceBlocks } from '../../tf/addon.js';
import { BLOCK } from './flat.js';

/**
 * Sum the first `parts` gradient regions of `grads` (each `total` floats, region 0 first) into region 0
 * over [from, to), and return the float64 sum of squares of each BLOCK of the result in that range (from
 * must be a block boundary).
 */
export function reduceGradients(
  grads: Float32Array,
  total: number,
  parts: number,
  from: number,
  to: number,
): Float64Array {
  return addonReduceBlocks(grads, total, parts, from, to, BLOCK) ?? reduceLoop(grads, total, parts, from, to);
}

/** reduceGradients in JavaScript: the reference. */
export function reduceLoop(grads: Float32Array, total: number, parts: number, from: number, to: number): Float64Array {
  const sums = new Float64Array(Math.ceil((to - from) / BLOCK));
  for (let b = 0; b < sums.length; b++) {
    const s0 = from + b * BLOCK;
    const s1 = Math.min(to, s0 + BLOCK);
    let sq = 0;
    if (parts === 1) {
      for (let i = s0; i < s1; i++) sq += grads[i] * grads[i];
    } else {
      for (let i = s0; i < s1; i++) {
        let acc = grads[i];
        for (let p = 1; p < parts; p++) acc += grads[p * total + i];
        const g = Math.fround(acc);
        grads[i] = g;
        sq += g * g;
      }
    }
    sums[b] = sq;
  }
  return sums;
}

/** Global L2 norm from the per-block sums of squares, added in block order. */
export function normOf(blockSums: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < blockSums.length; i++) s += blockSums[i];
  return Math.sqrt(s);
}
