// Host-side (no TF) pieces of data-parallel training, shared by the main thread and the workers: the flat
// layout of all weights in one Float32Array, the fixed-order gradient reduction, the blockwise squared norm
// and clipped Adam over a range of the flat vector. Every step of every configuration runs these same loops
// in the same order, so a run is reproducible byte for byte, and sharding the update over workers gives the
// same bytes as applying it in one place.
import { ModelError } from '../../errors.js';
import type { NamedArray } from '../../model/io.js';

/** Where each weight lives in the flat vector (names in save order). */
export interface FlatLayout {
  names: string[];
  shapes: number[][];
  offsets: number[];
  sizes: number[];
  /** Total number of floats. */
  total: number;
}

export function flatLayout(shapes: Record<string, number[]>): FlatLayout {
  const names = Object.keys(shapes);
  const offsets: number[] = [];
  const sizes: number[] = [];
  let total = 0;
  for (const n of names) {
    const size = shapes[n].reduce((a, b) => a * b, 1);
    offsets.push(total);
    sizes.push(size);
    total += size;
  }
  return { names, shapes: names.map((n) => shapes[n]), offsets, sizes, total };
}

/** Copy named weights into `out` (length layout.total). */
export function packWeights(layout: FlatLayout, values: Record<string, Float32Array>, out: Float32Array): void {
  layout.names.forEach((n, i) => {
    const v = values[n];
    if (!v) throw new ModelError(`weights: "${n}" is missing`);
    if (v.length !== layout.sizes[i]) throw new ModelError(`weights: "${n}" has ${v.length} values, expected ${layout.sizes[i]} (shape [${layout.shapes[i].join(', ')}])`);
    out.set(v, layout.offsets[i]);
  });
}

/** Copies of every weight, by name. */
export function unpackWeights(layout: FlatLayout, flat: Float32Array): Record<string, Float32Array> {
  const out: Record<string, Float32Array> = {};
  layout.names.forEach((n, i) => (out[n] = flat.slice(layout.offsets[i], layout.offsets[i] + layout.sizes[i])));
  return out;
}

/** Floats per block of the squared-norm sum; shard boundaries fall on block boundaries. */
export const BLOCK = 1 << 16;

/** Split [0, total) into `n` contiguous ranges on block boundaries (some may be empty). */
export function shardRanges(total: number, n: number): [number, number][] {
  const blocks = Math.ceil(total / BLOCK);
  const out: [number, number][] = [];
  for (let i = 0; i < n; i++) {
    const b0 = Math.floor((blocks * i) / n);
    const b1 = Math.floor((blocks * (i + 1)) / n);
    out.push([Math.min(total, b0 * BLOCK), Math.min(total, b1 * BLOCK)]);
  }
  return out;
}

/**
 * Sum the first `parts` gradient regions of `grads` (each `total` floats, region 0 first) into region 0
 * over [from, to), always in region order, and return the float64 sum of squares of each BLOCK of the
 * result in that range (from must be a block boundary).
 */
export function reduceRange(grads: Float32Array, total: number, parts: number, from: number, to: number): Float64Array {
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

export interface AdamHyper {
  learningRate: number;
  beta1: number;
  beta2: number;
  epsilon: number;
  /** 0: no clipping. */
  clipNorm: number;
}

/** The per-step factors of a clipped Adam update (iteration t counts from 1), as src/train/adam.ts uses them. */
export function adamFactors(h: AdamHyper, t: number, norm: number): { scale: number; lr: number } {
  const lr = (h.learningRate * Math.sqrt(1 - Math.pow(h.beta2, t))) / (1 - Math.pow(h.beta1, t));
  const scale = h.clipNorm > 0 ? h.clipNorm / Math.max(norm, h.clipNorm) : 1;
  return { scale, lr };
}

/** Clipped Adam on [from, to) of the flat weights `w`, moments `m`, `v`, with gradient `g` (region 0). */
export function adamRange(h: AdamHyper, w: Float32Array, m: Float32Array, v: Float32Array, g: Float32Array, from: number, to: number, scale: number, lr: number): void {
  const b1 = h.beta1;
  const b2 = h.beta2;
  const c1 = 1 - b1;
  const c2 = 1 - b2;
  const eps = h.epsilon;
  for (let i = from; i < to; i++) {
    const gi = g[i] * scale;
    const mi = Math.fround(m[i] * b1 + gi * c1);
    const vi = Math.fround(v[i] * b2 + gi * gi * c2);
    m[i] = mi;
    v[i] = vi;
    w[i] = w[i] - (mi / (Math.sqrt(vi) + eps)) * lr;
  }
}

/** Moments as checkpoint arrays named m/<weight>, v/<weight> (the format of src/train/adam.ts). */
export function momentArrays(layout: FlatLayout, m: Float32Array, v: Float32Array): NamedArray[] {
  const out: NamedArray[] = [];
  layout.names.forEach((n, i) => {
    const a = layout.offsets[i];
    const b = a + layout.sizes[i];
    out.push({ name: `m/${n}`, shape: layout.shapes[i], data: m.slice(a, b) });
    out.push({ name: `v/${n}`, shape: layout.shapes[i], data: v.slice(a, b) });
  });
  return out;
}

/** Load moments saved by momentArrays (or by Adam.state()). */
export function loadMoments(layout: FlatLayout, arrays: Map<string, NamedArray>, m: Float32Array, v: Float32Array): void {
  layout.names.forEach((n, i) => {
    for (const [kind, store] of [['m', m], ['v', v]] as const) {
      const a = arrays.get(`${kind}/${n}`);
      if (!a || a.data.length !== layout.sizes[i]) throw new ModelError(`optimizer state: "${kind}/${n}" is missing or has the wrong size`);
      store.set(a.data, layout.offsets[i]);
    }
  });
}
