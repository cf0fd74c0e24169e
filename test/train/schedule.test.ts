// The training schedule's decisions on a hand-made state: improvement, early stopping, learning-rate decay
// on a plateau (factor, floor, counted again after a decay), and the epoch bookkeeping.
import { describe, expect, it } from 'vitest';
import type { RunState } from '../../src/train/checkpoint.js';
import { closeEpoch, isImprovement, nextStep, patienceRanOut, warmupFactor } from '../../src/train/schedule.js';

const state = (over: Partial<RunState> = {}): RunState => ({
  kind: 'captioner.train-state',
  epoch: 0,
  batchInEpoch: 0,
  step: 0,
  learningRate: 0.01,
  bestValLoss: Infinity,
  bestEpoch: 0,
  sinceBest: 0,
  sinceDecay: 0,
  epochLossSum: 0,
  epochTokens: 0,
  epochSeconds: 0,
  datasetFingerprint: 'd',
  featureFingerprint: 'f',
  spec: {},
  seed: 1,
  batchSize: 8,
  ...over,
});
const tc = (patience: number, decay: { patience: number; factor: number; min: number }) => ({
  patience,
  lrDecay: decay,
});

describe('schedule', () => {
  it('an improvement is a validation loss lower by more than 1e-6; without validation every epoch is one', () => {
    const s = state({ bestValLoss: 2 });
    expect(isImprovement(s, 1.9, true)).toBe(true);
    expect(isImprovement(s, 2 - 1e-7, true)).toBe(false);
    expect(isImprovement(s, 3, true)).toBe(false);
    expect(isImprovement(s, NaN, false)).toBe(true);
    expect(isImprovement(state(), 5, true)).toBe(true);
  });

  it('closes epochs: step count and time reset, best and plateau counters kept (sinceDecay only where the run decays)', () => {
    const s = state({ step: 2, batchInEpoch: 2, epochSeconds: 3 });
    closeEpoch(s, 1, true, true);
    expect(s).toMatchObject({
      epoch: 1,
      batchInEpoch: 0,
      epochSeconds: 0,
      bestEpoch: 1,
      sinceBest: 0,
      sinceDecay: 0,
      step: 2,
    });
    closeEpoch(s, 2, false, true);
    expect(s).toMatchObject({ epoch: 2, bestEpoch: 1, sinceBest: 1, sinceDecay: 1 });
    const { sinceDecay: _, ...noDecay } = state();
    closeEpoch(noDecay, 1, false, false);
    expect(noDecay).toMatchObject({ epoch: 1, sinceBest: 1 });
    expect('sinceDecay' in noDecay).toBe(false);
  });

  it('stops when patience runs out (0: never), before any decay', () => {
    expect(patienceRanOut(2, 2)).toBe(true);
    expect(patienceRanOut(1, 2)).toBe(false);
    expect(patienceRanOut(99, 0)).toBe(false);
    expect(
      nextStep(state({ sinceBest: 2, sinceDecay: 2 }), false, tc(2, { patience: 1, factor: 0.5, min: 0 })),
    ).toEqual({ stop: true });
    expect(nextStep(state({ sinceBest: 0 }), true, tc(1, { patience: 0, factor: 0.5, min: 0 }))).toEqual({
      stop: false,
      decayed: null,
    });
  });

  it('decays the learning rate after lrDecay.patience flat epochs, not below lrDecay.min, and counts the plateau again', () => {
    const s = state({ sinceBest: 2, sinceDecay: 2, learningRate: 0.01 });
    expect(nextStep(s, false, tc(0, { patience: 2, factor: 0.5, min: 0.004 }))).toEqual({
      stop: false,
      decayed: { from: 0.01, to: 0.005 },
    });
    expect(s).toMatchObject({ learningRate: 0.005, sinceDecay: 0 });
    s.sinceDecay = 2;
    expect(nextStep(s, false, tc(0, { patience: 2, factor: 0.5, min: 0.004 }))).toEqual({
      stop: false,
      decayed: { from: 0.005, to: 0.004 },
    });
    s.sinceDecay = 2;
    // at the floor: nothing to decay, the plateau still counts again
    expect(nextStep(s, false, tc(0, { patience: 2, factor: 0.5, min: 0.004 }))).toEqual({ stop: false, decayed: null });
    expect(s).toMatchObject({ learningRate: 0.004, sinceDecay: 0 });
    // factor 1 or patience 0: decay off
    const t = state({ sinceDecay: 5 });
    expect(nextStep(t, false, tc(0, { patience: 2, factor: 1, min: 0 }))).toEqual({ stop: false, decayed: null });
    expect(nextStep(t, false, tc(0, { patience: 0, factor: 0.5, min: 0 }))).toEqual({ stop: false, decayed: null });
    expect(t.sinceDecay).toBe(5);
  });
});

describe('warmupFactor', () => {
  it('rises linearly to 1 over warmupSteps, counted from step 1, and is 1 when warm-up is off', () => {
    expect([1, 2, 3, 4, 5, 6, 100].map((s) => warmupFactor(s, 4))).toEqual([0.25, 0.5, 0.75, 1, 1, 1, 1]);
    expect(warmupFactor(1, 0)).toBe(1);
    expect(warmupFactor(1, 1)).toBe(1);
  });
});
