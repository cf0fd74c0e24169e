// The training schedule, pure (no TF, no I/O): what counts as a better validation loss, when patience has
// run out (early stopping), when and how far the learning rate decays on a plateau, and the step and epoch
// bookkeeping (in last/state.json) that these decisions read; the loop (loop.ts) runs them for every mode.
import type { Config } from '../config/schema.js';
import type { RunState } from './checkpoint.js';

/** What every kind of run keeps in last/state.json for the loop (cross-entropy runs: RunState). */
export interface LoopState {
  /** Epochs fully done. */
  epoch: number;
  /** Batches done in the epoch in progress (epoch + 1). */
  batchInEpoch: number;
  step: number;
  learningRate: number;
  bestEpoch: number;
  /** Epochs since the last improvement (early stopping). */
  sinceBest: number;
  /** Epochs since the last improvement or decay (learning-rate decay; runs that decay only). */
  sinceDecay?: number;
  epochSeconds: number;
}

/** A validation loss must be lower than the best by more than this to count as an improvement. */
const MIN_IMPROVEMENT = 1e-6;

/** Whether an epoch with `valLoss` improves on the best; without validation data every epoch does (best/ is the last). */
export function isImprovement(state: RunState, valLoss: number, validation: boolean): boolean {
  return validation ? valLoss < state.bestValLoss - MIN_IMPROVEMENT : true;
}

/** Whether `sinceBest` epochs without improvement exhaust `patience` (0: never). */
export function patienceRanOut(sinceBest: number, patience: number): boolean {
  return patience > 0 && sinceBest >= patience;
}

/**
 * Close epoch `epoch`: the best-model and plateau counters (sinceDecay where `decays`), and the step count and
 * time reset for the next epoch (the mode resets its own sums).
 */
export function closeEpoch(state: LoopState, epoch: number, improved: boolean, decays: boolean): void {
  if (improved) {
    state.bestEpoch = epoch;
    state.sinceBest = 0;
    if (decays) state.sinceDecay = 0;
  } else {
    state.sinceBest++;
    if (decays) state.sinceDecay = (state.sinceDecay ?? 0) + 1;
  }
  state.epoch = epoch;
  state.batchInEpoch = 0;
  state.epochSeconds = 0;
}

/** What follows a closed epoch. */
export type NextStep = { stop: true } | { stop: false; decayed: { from: number; to: number } | null };

/**
 * After endEpoch: stop when train.patience epochs passed without improvement; otherwise, after
 * train.lrDecay.patience such epochs, multiply the learning rate by lrDecay.factor (not below lrDecay.min)
 * and count the plateau again. Updates state.learningRate; the caller applies it to the optimizer.
 */
export function nextStep(
  state: LoopState,
  improved: boolean,
  tc: Pick<Config['train'], 'patience'> & { lrDecay?: Config['train']['lrDecay'] },
): NextStep {
  if (!improved && patienceRanOut(state.sinceBest, tc.patience)) return { stop: true };
  let decayed: { from: number; to: number } | null = null;
  if (
    !improved &&
    tc.lrDecay &&
    tc.lrDecay.patience > 0 &&
    (state.sinceDecay ?? 0) >= tc.lrDecay.patience &&
    tc.lrDecay.factor < 1
  ) {
    const next = Math.max(tc.lrDecay.min, state.learningRate * tc.lrDecay.factor);
    if (next < state.learningRate) {
      decayed = { from: state.learningRate, to: next };
      state.learningRate = next;
    }
    state.sinceDecay = 0;
  }
  return { stop: false, decayed };
}

/**
 * Linear learning-rate warm-up (train.warmupSteps): the factor for step `step` (counted from 1 over the
 * whole run) is min(1, step / warmupSteps); 1 when warm-up is off (0).
 */
export function warmupFactor(step: number, warmupSteps: number): number {
  return warmupSteps > 0 ? Math.min(1, step / warmupSteps) : 1;
}
