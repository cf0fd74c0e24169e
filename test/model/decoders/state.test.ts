// Generic decoder-state bookkeeping: rows are gathered and joined across every tensor of a state,
// whatever its rank, and nothing leaks.
import { describe, it, expect, beforeAll } from 'vitest';
import { tf } from '../../../src/tf/tf.js';
import { concatStates, disposeState, gatherState, stateRows } from '../../../src/model/decoders/state.js';
import { ModelError } from '../../../src/errors.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

function sample() {
  return {
    h: tf.tensor2d([
      [0, 1],
      [10, 11],
      [20, 21],
    ]), // [3, 2]
    grid: tf.tensor3d([[[0]], [[1]], [[2]]]), // [3, 1, 1]
  };
}

describe('decoder state helpers', () => {
  it('gathers rows of every tensor (repeats allowed) and leaves the input alone', () => {
    const s = sample();
    const before = tf.memory().numTensors;
    const g = gatherState(s, [2, 0, 0]);
    expect(g.h.arraySync()).toEqual([
      [20, 21],
      [0, 1],
      [0, 1],
    ]);
    expect(g.grid.arraySync()).toEqual([[[2]], [[0]], [[0]]]);
    expect(stateRows(g)).toBe(3);
    expect(s.h.isDisposed).toBe(false);
    disposeState(g);
    expect(tf.memory().numTensors).toBe(before);
    disposeState(s);
  });

  it('joins states row-wise', () => {
    const a = sample();
    const b = gatherState(a, [1]);
    const before = tf.memory().numTensors;
    const c = concatStates([a, b]);
    expect(c.h.arraySync()).toEqual([
      [0, 1],
      [10, 11],
      [20, 21],
      [10, 11],
    ]);
    expect(c.grid.shape).toEqual([4, 1, 1]);
    disposeState(c);
    expect(tf.memory().numTensors).toBe(before);
    disposeState(a);
    disposeState(b);
  });

  it('rejects bad rows, mismatched states and empty ones', () => {
    const s = sample();
    expect(() => gatherState(s, [3])).toThrow(ModelError);
    expect(() => gatherState(s, [-1])).toThrow(/row -1/);
    expect(() => concatStates([s, { h: s.h }])).toThrow(/different keys/);
    expect(() => stateRows({})).toThrow(/empty/);
    const bad = { h: s.h, x: tf.zeros([2, 1]) };
    expect(() => stateRows(bad)).toThrow(/"x" has 2 rows/);
    bad.x.dispose();
    disposeState(s);
  });
});
