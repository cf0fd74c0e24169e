// Gradient checks shared by the decoder tests: a decoder's loss and named gradients on a batch, and a
// finite-difference check of every weight against them (central differences, on a few entries per weight
// plus the one with the largest gradient).
import { expect } from 'vitest';
import { tf } from '../../src/tf/tf.js';
import type { CaptionBatch, Decoder } from '../../src/model/decoders/types.js';
import { byWeightName } from '../../src/train/adam.js';
import { rng } from '../../src/util/random.js';

/** The training loss (no dropout unless the decoder's spec has it) and its gradient per weight name, on the host. */
export function lossAndGrads(
  m: Decoder,
  batch: CaptionBatch,
  seed?: number,
): { loss: number; grads: Record<string, Float32Array> } {
  const { value, grads } = tf.variableGrads(
    () => m.loss(batch, { training: true, ...(seed !== undefined ? { seed } : {}) }),
    m.variables,
  );
  try {
    expect(Object.keys(grads)).toHaveLength(m.variables.length);
    const named = byWeightName(m.weights, grads);
    return {
      loss: value.dataSync()[0],
      grads: Object.fromEntries(Object.entries(named).map(([k, g]) => [k, Float32Array.from(g.dataSync())])),
    };
  } finally {
    tf.dispose([value, ...Object.values(grads)]);
  }
}

export interface FiniteDifferenceOptions {
  /** Random entries checked per weight (besides the largest-gradient one). */
  picks: number;
  /** Step sizes; an entry passes when any of them agrees (a ReLU kink within one step spoils that one). */
  steps: number[];
  /** Allowed |numeric - analytic| for an analytic value a. */
  tolerance: (a: number) => number;
  /** A random entry of a weight with rows only some of which the batch uses (embeddings), or undefined for any entry. */
  entry?: (name: string, rows: number, cols: number, r: () => number) => number | undefined;
  seed?: number;
}

/**
 * Check the analytic gradients of `m` (with dropout off) against central differences of its loss on
 * `batch`, weight by weight; every weight must have a non-trivial gradient somewhere. Returns the number
 * of entries checked. The weights are restored afterwards.
 */
export function checkFiniteDifferences(m: Decoder, batch: CaptionBatch, o: FiniteDifferenceOptions): number {
  const { grads: analytic } = lossAndGrads(m, batch, 1);
  const lossAt = () => {
    const l = m.loss(batch, { training: false });
    const v = l.dataSync()[0];
    l.dispose();
    return v;
  };
  const r = rng(o.seed ?? 21);
  let checked = 0;
  for (const [name, v] of Object.entries(m.weights)) {
    const values = Float32Array.from(v.dataSync());
    const cols = v.shape.length === 2 ? v.shape[1] : values.length;
    const rows = v.shape.length === 2 ? v.shape[0] : 1;
    const picks = Array.from(
      { length: Math.min(o.picks, values.length) },
      () => o.entry?.(name, rows, cols, r) ?? Math.floor(r() * values.length),
    );
    // plus the entry with the largest analytic gradient, so no weight is checked only on tiny values
    let big = 0;
    analytic[name].forEach((g, i) => {
      if (Math.abs(g) > Math.abs(analytic[name][big])) big = i;
    });
    picks.push(big);
    for (const i of picks) {
      const probe = (delta: number) => {
        const w2 = values.slice();
        w2[i] += delta;
        tf.tidy(() => v.assign(tf.tensor(w2, v.shape)));
        return lossAt();
      };
      const numeric = o.steps.map((eps) => (probe(eps) - probe(-eps)) / (2 * eps));
      tf.tidy(() => v.assign(tf.tensor(values, v.shape)));
      const a = analytic[name][i];
      const err = Math.min(...numeric.map((n) => Math.abs(n - a)));
      expect(err, `${name}[${i}]: numeric ${numeric.join(' / ')}, analytic ${a}`).toBeLessThanOrEqual(o.tolerance(a));
      checked++;
    }
    expect(Math.abs(analytic[name][big]), `${name} has a non-trivial gradient`).toBeGreaterThan(1e-4);
  }
  return checked;
}

/** Largest |a - b| per weight name. */
export function maxDiffs(a: Record<string, Float32Array>, b: Record<string, Float32Array>): Record<string, number> {
  return Object.fromEntries(
    Object.keys(a).map((k) => [k, a[k].reduce((m, v, i) => Math.max(m, Math.abs(v - b[k][i])), 0)]),
  );
}
