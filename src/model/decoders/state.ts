// Generic bookkeeping for one-step decoder states (./types.ts DecoderState): every tensor's first
// dimension is the sequence, so reordering beams, joining batches and freeing need no decoder knowledge.
import { tf } from '../../tf/tf.js';
import { ModelError } from '../../errors.js';
import type { DecoderState } from './types.js';

/** Sequences in a state (the first dimension shared by all its tensors). */
export function stateRows(state: DecoderState): number {
  let n = -1;
  for (const [k, t] of Object.entries(state)) {
    if (n < 0) n = t.shape[0];
    else if (t.shape[0] !== n) throw new ModelError(`decoder state: "${k}" has ${t.shape[0]} rows, expected ${n}`);
  }
  if (n < 0) throw new ModelError('decoder state is empty');
  return n;
}

/** The rows at `indices` (repeats allowed), e.g. to reorder beams. New tensors; the input is left alone. */
export function gatherState(state: DecoderState, indices: ArrayLike<number>): DecoderState {
  const n = stateRows(state);
  const idx = Int32Array.from(indices);
  for (const i of idx) if (!(i >= 0 && i < n)) throw new ModelError(`decoder state: row ${i} outside 0..${n - 1}`);
  return tf.tidy(() => {
    const ids = tf.tensor1d(idx, 'int32');
    const out: DecoderState = {};
    for (const [k, t] of Object.entries(state)) out[k] = tf.gather(t, ids);
    return out;
  });
}

/** Rows of several states (same keys) stacked in order into one state. */
export function concatStates(states: DecoderState[]): DecoderState {
  if (states.length === 0) throw new ModelError('concatStates: no states');
  const keys = Object.keys(states[0]);
  for (const s of states) {
    if (Object.keys(s).length !== keys.length || keys.some((k) => !(k in s)))
      throw new ModelError('concatStates: states have different keys');
  }
  return tf.tidy(() => {
    const out: DecoderState = {};
    for (const k of keys)
      out[k] =
        states.length === 1
          ? tf.clone(states[0][k])
          : tf.concat(
              states.map((s) => s[k]),
              0,
            );
    return out;
  });
}

export function disposeState(state: DecoderState): void {
  tf.dispose(Object.values(state));
}
