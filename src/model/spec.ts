// Shared weight initialisers for the decoders (pure: no TF, no I/O).
import type { Rng } from '../util/random.js';

/** Glorot-uniform values for a [fanIn, fanOut] kernel (n values). */
export function glorot(r: Rng, fanIn: number, fanOut: number, n: number): Float32Array {
  const lim = Math.sqrt(6 / (fanIn + fanOut));
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 2 - 1) * lim;
  return out;
}

/** Standard normal via Box-Muller. */
function gauss(r: Rng): number {
  const u = Math.max(r(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r());
}

/** n values drawn from a normal distribution of mean 0 and standard deviation `std`. */
export function normal(r: Rng, std: number, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = gauss(r) * std;
  return out;
}

/** A [rows, cols] matrix (rows <= cols) with orthonormal rows, by Gram-Schmidt on gaussian rows. */
export function orthogonalRows(r: Rng, rows: number, cols: number): Float32Array {
  const m = new Float64Array(rows * cols);
  for (let i = 0; i < m.length; i++) m[i] = gauss(r);
  for (let i = 0; i < rows; i++) {
    const ri = i * cols;
    for (let j = 0; j < i; j++) {
      const rj = j * cols;
      let dot = 0;
      for (let k = 0; k < cols; k++) dot += m[ri + k] * m[rj + k];
      for (let k = 0; k < cols; k++) m[ri + k] -= dot * m[rj + k];
    }
    let norm = 0;
    for (let k = 0; k < cols; k++) norm += m[ri + k] * m[ri + k];
    norm = Math.sqrt(norm) || 1;
    for (let k = 0; k < cols; k++) m[ri + k] /= norm;
  }
  return Float32Array.from(m);
}
