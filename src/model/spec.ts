// Shared weight initialisers for the decoders (pure: no TF, no I/O), and the two initialisation schemes
// (model.init) they implement: 'keras' (the seed's Keras defaults: glorot-uniform kernels, orthogonal
// recurrent kernels, zero biases, LSTM forget bias 1, embeddings uniform in +-0.05) and 'torch' (PyTorch's
// layer defaults: nn.Linear and nn.LSTM draw uniform in +-1/sqrt(fan-in) for kernels and biases alike, an
// LSTM's two biases summed into our one, nn.Embedding N(0, 1)). Each decoder says which of its weights is
// which kind of layer (merge.ts, attention.ts, transformer.ts).
import type { Rng } from '../util/random.js';

/** How a fresh model's weights are drawn (model.init). */
export type InitScheme = 'keras' | 'torch';

/** n values uniform in (-bound, bound). */
export function uniform(r: Rng, bound: number, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 2 - 1) * bound;
  return out;
}

/** nn.Linear's default for its kernel and its bias alike (kaiming-uniform with a = sqrt(5)): uniform in +-1/sqrt(fanIn). */
export function torchLinear(r: Rng, fanIn: number, n: number): Float32Array {
  return uniform(r, 1 / Math.sqrt(fanIn), n);
}

/**
 * nn.LSTM's default bias as our single bias: PyTorch keeps two (bias_ih + bias_hh), each uniform in
 * +-1/sqrt(units), so ours is their sum (a triangular distribution on +-2/sqrt(units)).
 */
export function torchLstmBias(r: Rng, units: number, n: number): Float32Array {
  const a = uniform(r, 1 / Math.sqrt(units), n);
  const b = uniform(r, 1 / Math.sqrt(units), n);
  for (let i = 0; i < n; i++) a[i] += b[i];
  return a;
}

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

/**
 * The 'torch' scheme for the LSTM decoders (merge, attention), by weight name: `embedding` N(0, 1);
 * `lstm/*` as nn.LSTM (uniform in +-1/sqrt(units), the bias the sum of two such); every other `.../kernel`
 * [fanIn, fanOut] and its `.../bias` as nn.Linear (uniform in +-1/sqrt(fanIn)). A bias without a kernel of
 * the same prefix names the kernel it belongs to in `biasOf` (attention's deep/bias is deep/z's).
 */
export function torchRecurrentWeights(
  shapes: Record<string, number[]>,
  r: Rng,
  units: number,
  biasOf: Record<string, string> = {},
): Record<string, Float32Array> {
  const out: Record<string, Float32Array> = {};
  for (const [name, shape] of Object.entries(shapes)) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (name === 'embedding') out[name] = normal(r, 1, n);
    else if (name === 'lstm/bias') out[name] = torchLstmBias(r, units, n);
    else if (name.startsWith('lstm/')) out[name] = uniform(r, 1 / Math.sqrt(units), n);
    else if (name.endsWith('bias')) {
      const kernel = biasOf[name] ?? name.replace(/bias$/, 'kernel');
      const ks = shapes[kernel];
      if (!ks) throw new Error(`torch init: no kernel for bias "${name}"`);
      out[name] = torchLinear(r, ks[0], n);
    } else out[name] = torchLinear(r, shape[0], n);
  }
  return out;
}
