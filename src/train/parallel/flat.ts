// The flat layout of data-parallel training (host side, no TF), shared by the main thread and the workers:
// every weight in one Float32Array (names in save order), the block-aligned partitions the workers reduce and
// update, and the Adam moments as two more such arrays (flatMoments: src/train/adam.ts's AdamMoments).
import { ModelError } from '../../errors.js';
import type { AdamMoments } from '../adam.js';

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
    if (v.length !== layout.sizes[i])
      throw new ModelError(
        `weights: "${n}" has ${v.length} values, expected ${layout.sizes[i]} (shape [${layout.shapes[i].join(', ')}])`,
      );
    out.set(v, layout.offsets[i]);
  });
}

/** Copies of every weight, by name. */
export function unpackWeights(layout: FlatLayout, flat: Float32Array): Record<string, Float32Array> {
  const out: Record<string, Float32Array> = {};
  layout.names.forEach((n, i) => (out[n] = flat.slice(layout.offsets[i], layout.offsets[i] + layout.sizes[i])));
  return out;
}

/** Floats per block of the squared-norm sum; partition boundaries fall on block boundaries. */
export const BLOCK = 1 << 16;

/** Split [0, total) into `n` contiguous ranges on block boundaries (some may be empty). */
export function partitionRanges(total: number, n: number): [number, number][] {
  const blocks = Math.ceil(total / BLOCK);
  const out: [number, number][] = [];
  for (let i = 0; i < n; i++) {
    const b0 = Math.floor((blocks * i) / n);
    const b1 = Math.floor((blocks * (i + 1)) / n);
    out.push([Math.min(total, b0 * BLOCK), Math.min(total, b1 * BLOCK)]);
  }
  return out;
}

/** The Adam moments as flat arrays `m`, `v` of the layout (for src/train/adam.ts's Adam and its checkpoint format). */
export function flatMoments(layout: FlatLayout, m: Float32Array, v: Float32Array): AdamMoments {
  const at = (name: string) => {
    const i = layout.names.indexOf(name);
    if (i < 0) throw new ModelError(`optimizer state: no weight "${name}"`);
    return [layout.offsets[i], layout.offsets[i] + layout.sizes[i], i] as const;
  };
  return {
    names: layout.names,
    shape: (n) => layout.shapes[at(n)[2]],
    read: async (n) => {
      const [a, b] = at(n);
      return [m.slice(a, b), v.slice(a, b)];
    },
    write: (n, mm, vv) => {
      const [a] = at(n);
      m.set(mm, a);
      v.set(vv, a);
    },
    dispose: () => {},
  };
}
