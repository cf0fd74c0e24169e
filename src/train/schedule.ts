// The training schedule, pure (no TF, no I/O): what counts as a better validation loss, when patience has
// run out (early stopping), when and how far the learning rate decays on a plateau, and the step and epoch
// bookkeeping of a cross-entropy run's state (last/state.json) that these decisions read.
import type { Config } from '../config/schema.js';
import type { RunState } from './checkpoint.js';

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

/** Count one optimizer step on batch `batchIndex` of the epoch in progress: its mean loss over `tokens` targets. */
export function countStep(state: RunState, batchIndex: number, loss: number, tokens: number): void {
  state.step++;
  state.batchInEpoch = batchIndex + 1;
  state.epochLossSum += loss * tokens;
  state.epochTokens += tokens;
}

/** Close epoch `epoch`: the best-model and plateau counters, and the running sums reset for the next epoch. */
export function endEpoch(state: RunState, epoch: number, improved: boolean, valLoss: number, validation: boolean): void {
  if (improved) {
    if (validation) state.bestValLoss = valLoss;
    state.bestEpoch = epoch;
    state.sinceBest = 0;
    state.sinceDecay = 0;
  } else {
    state.sinceBest++;
    state.sinceDecay++;
  }
  state.epoch = epoch;
  state.batchInEpoch = 0;
  state.epochLossSum = 0;
  state.epochTokens = 0;
  state.epochSeconds = 0;
}

/** What follows a closed epoch. */
export type NextStep = { stop: true } | { stop: false; decayed: { from: number; to: number } | null };

/**
 * After endEpoch: stop when train.patience epochs passed without improvement; otherwise, after
 * train.lrDecay.patience such epochs, multiply the learning rate by lrDecay.factor (not below lrDecay.min)
 * and count the plateau again. Updates state.learningRate; the caller applies it to the optimizer.
 */
export function nextStep(state: RunState, improved: boolean, tc: Pick<Config['train'], 'patience' | 'lrDecay'>): NextStep {
  if (!improved && patienceRanOut(state.sinceBest, tc.patience)) return { stop: true };
  let decayed: { from: number; to: number } | null = null;
  if (!improved && tc.lrDecay.patience > 0 && state.sinceDecay >= tc.lrDecay.patience && tc.lrDecay.factor < 1) {
    const next = Math.max(tc.lrDecay.min, state.learningRate * tc.lrDecay.factor);
    if (next < state.learningRate) {
      decayed = { from: state.learningRate, to: next };
      state.learningRate = next;
    }
    state.sinceDecay = 0;
  }
  return { stop: false, decayed };
}
