// Splitting one CaptionBatch into per-worker slices (pure, no TF). Rows stay in order and are cut into
// contiguous runs with about the same number of real target tokens; each slice is re-trimmed to its own
// longest caption (the LSTM is causal, so the trimmed steps change nothing). A slice's cross-entropy is the
// mean over its own targets, so it is weighted by (its targets / the batch's targets), and a per-caption
// term (the attention regulariser, a mean over rows) by (its rows / the batch's rows): the weighted
// gradients then sum to the gradient of the whole batch's loss.
import type { CaptionBatch } from '../../model/decoders/batch.js';

export interface BatchSlice {
  batch: CaptionBatch;
  /** targets in this slice / targets in the whole batch. */
  weight: number;
  /** rows in this slice / rows in the whole batch. */
  rowWeight: number;
}

/** Up to `n` non-empty slices of `b`, in row order. `featureSize`: floats per image. */
export function splitBatch(b: CaptionBatch, n: number, featureSize: number): BatchSlice[] {
  const B = b.size;
  const T = b.steps;
  const total = b.targets.length;
  // real targets per row, and the last real step per row
  const perRow = new Int32Array(B);
  const lastStep = new Int32Array(B).fill(-1);
  for (const p of b.positions) {
    const r = Math.floor(p / T);
    perRow[r]++;
    lastStep[r] = Math.max(lastStep[r], p - r * T);
  }
  if (n <= 1 || B <= 1) return [{ batch: b, weight: 1, rowWeight: 1 }];
  // cut after the row where the running token count first reaches k/n of the total
  const cuts: number[] = [0];
  let run = 0;
  let k = 1;
  for (let r = 0; r < B && k < n; r++) {
    run += perRow[r];
    while (k < n && run * n >= total * k) {
      if (cuts[cuts.length - 1] !== r + 1) cuts.push(r + 1);
      k++;
    }
  }
  if (cuts[cuts.length - 1] !== B) cuts.push(B);
  const out: BatchSlice[] = [];
  for (let i = 0; i + 1 < cuts.length; i++) {
    const s = slice(b, cuts[i], cuts[i + 1], featureSize, perRow, lastStep);
    if (s.targets.length) out.push({ batch: s, weight: s.targets.length / total, rowWeight: s.size / B });
  }
  return out;
}

function slice(
  b: CaptionBatch,
  r0: number,
  r1: number,
  featureSize: number,
  perRow: Int32Array,
  lastStep: Int32Array,
): CaptionBatch {
  const T = b.steps;
  const rows = r1 - r0;
  let steps = 1;
  let count = 0;
  for (let r = r0; r < r1; r++) {
    steps = Math.max(steps, lastStep[r] + 1);
    count += perRow[r];
  }
  const inputs = new Int32Array(rows * steps);
  for (let r = 0; r < rows; r++) inputs.set(b.inputs.subarray((r0 + r) * T, (r0 + r) * T + steps), r * steps);
  const positions = new Int32Array(count);
  const targets = new Int32Array(count);
  let j = 0;
  for (let i = 0; i < b.positions.length; i++) {
    const p = b.positions[i];
    const r = Math.floor(p / T);
    if (r < r0 || r >= r1) continue;
    positions[j] = (r - r0) * steps + (p - r * T);
    targets[j] = b.targets[i];
    j++;
  }
  return { size: rows, steps, images: b.images.slice(r0 * featureSize, r1 * featureSize), inputs, positions, targets };
}
