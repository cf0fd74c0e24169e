// The decoder's shape (sizes, merge mode) and seeded weight initialisation. Pure: no TF, no I/O.
import { ModelError } from '../errors.js';
import type { ModelConfig } from '../config/schema.js';
import { rng, type Rng } from '../util/random.js';

export interface DecoderSpec {
  /** Vocabulary size (index 0 is <pad>). */
  vocabSize: number;
  /** Length of the image feature vector. */
  featureDim: number;
  embedDim: number;
  units: number;
  imageUnits: number;
  hiddenUnits: number;
  merge: 'add' | 'concat';
  dropout: number;
}

/** Every weight of the merge model, in save order, with its shape. */
export function weightShapes(s: DecoderSpec): Record<string, number[]> {
  const mergeDim = s.merge === 'add' ? s.units : s.units + s.imageUnits;
  return {
    'image/kernel': [s.featureDim, s.imageUnits],
    'image/bias': [s.imageUnits],
    'embedding': [s.vocabSize, s.embedDim],
    'lstm/kernel': [s.embedDim, 4 * s.units],
    'lstm/recurrent': [s.units, 4 * s.units],
    'lstm/bias': [4 * s.units],
    'hidden/kernel': [mergeDim, s.hiddenUnits],
    'hidden/bias': [s.hiddenUnits],
    'output/kernel': [s.hiddenUnits, s.vocabSize],
    'output/bias': [s.vocabSize],
  };
}

/** Check a spec; `add` needs the image branch and the LSTM to have the same width. */
export function validateSpec(s: DecoderSpec): void {
  for (const k of ['vocabSize', 'featureDim', 'embedDim', 'units', 'imageUnits', 'hiddenUnits'] as const) {
    if (!Number.isInteger(s[k]) || s[k] <= 0) throw new ModelError(`model: ${k} must be a positive integer, got ${s[k]}`);
  }
  if (s.vocabSize < 4) throw new ModelError(`model: vocabulary of ${s.vocabSize} tokens is too small (needs <pad>, <unk>, start, end)`);
  if (s.merge === 'add' && s.imageUnits !== s.units) {
    throw new ModelError(`model: merge "add" needs model.imageUnits (${s.imageUnits}) equal to model.units (${s.units}); set them equal or use merge "concat"`);
  }
  if (!(s.dropout >= 0 && s.dropout < 1)) throw new ModelError(`model: dropout must be in [0, 1), got ${s.dropout}`);
}

export function specFromConfig(m: ModelConfig, vocabSize: number, featureDim: number): DecoderSpec {
  const s: DecoderSpec = {
    vocabSize,
    featureDim,
    embedDim: m.embedDim,
    units: m.units,
    imageUnits: m.imageUnits,
    hiddenUnits: m.hiddenUnits,
    merge: m.merge,
    dropout: m.dropout,
  };
  validateSpec(s);
  return s;
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
 * Keras-like initial values from a seed: glorot-uniform kernels, orthogonal recurrent kernel,
 * uniform(-0.05, 0.05) embeddings, zero biases except the LSTM forget gate (1, "unit forget bias").
 * LSTM gate order along the 4U axis: input, forget, cell, output.
 */
export function initialWeights(s: DecoderSpec, seed: number): Record<string, Float32Array> {
  const r = rng(seed);
  const shapes = weightShapes(s);
  const out: Record<string, Float32Array> = {};
  for (const [name, shape] of Object.entries(shapes)) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (name.endsWith('bias')) {
      const b = new Float32Array(n);
      if (name === 'lstm/bias') b.fill(1, s.units, 2 * s.units);
      out[name] = b;
    } else if (name === 'embedding') {
      const e = new Float32Array(n);
      for (let i = 0; i < n; i++) e[i] = (r() * 2 - 1) * 0.05;
      out[name] = e;
    } else if (name === 'lstm/recurrent') {
      // orthogonal [U, 4U]: rows orthonormal
      out[name] = orthogonalRows(r, shape[0], shape[1]);
    } else {
      out[name] = glorot(r, shape[0], shape[1], n);
    }
  }
  return out;
}
