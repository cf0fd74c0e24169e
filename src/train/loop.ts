// The one training loop, for cross-entropy training (run.ts) and self-critical fine-tuning (scst-run.ts) alike,
// as self-critical.pytorch has one train.py with a mode flag: epochs of seeded, shuffled batches from where
// the checkpoint left off (state.json's epoch and batchInEpoch), one optimizer step per batch, Ctrl-C seen
// between steps, validation at each epoch's end, best/ saved when the validation figure improves, early
// stopping and learning-rate decay on a plateau (src/train/schedule.ts), last/ and the history saved every
// epoch, and on an interrupt a checkpoint and the way to go on. A TrainingMode plugs in what differs: its
// batches, its step, its validation and records, and its checkpoint writers.
import { log, progress } from '../log.js';
import { logInterrupted } from './checkpoint.js';
import { closeEpoch, nextStep, type LoopState } from './schedule.js';

export type { LoopState } from './schedule.js';

export interface TrainingMode<B> {
  /** The progress bar's label: `${label} ${epoch}/${epochs}`. */
  readonly label: string;
  /** The last epoch to train. */
  readonly epochs: number;
  /** Stop after this many epochs without improvement (0: never). */
  readonly patience: number;
  /** Decay the learning rate after lrDecay.patience epochs without improvement; absent: never (state.sinceDecay unused). */
  readonly lrDecay?: { patience: number; factor: number; min: number };
  /** Epoch `epoch`'s batches, in its seeded order. */
  batches(epoch: number): B[];
  /** One optimizer step on `batch`, added to the epoch's sums (state.step is the steps before it). Throws on a non-finite loss. */
  step(batch: B, epoch: number): Promise<void>;
  /** The progress bar's figures, `seconds` into the epoch. */
  progress(seconds: number): Record<string, number>;
  /**
   * After epoch `epoch`'s steps: validate, add the epoch's record to the history and log it, and keep the
   * validation figure as the best when it improves on it (whether it did is the answer). 'interrupted' when
   * the signal came first: nothing is recorded, and --resume validates.
   */
  validate(epoch: number): Promise<{ improved: boolean } | 'interrupted'>;
  /** Zero the epoch's sums for the next one. */
  resetSums(): void;
  /** Apply a decayed learning rate to the optimizer. */
  setLearningRate(lr: number): void;
  /** The log line when patience runs out. */
  stopMessage(): string;
  saveBest(): Promise<void>;
  /** Replace last/ with the model, the optimizer and the state (the checkpoint --resume continues from). */
  saveLast(): Promise<void>;
  /** Rewrite history.jsonl and loss.svg. */
  writeHistory(): Promise<void>;
}

export interface LoopOptions {
  /** Abort to stop at the next step boundary (a checkpoint is saved). */
  signal?: AbortSignal;
  /** Called after every optimizer step with the total step count. */
  onStep?: (step: number) => void;
  /** The run's last/ folder (named in the interrupt message). */
  lastDir: string;
}

export type LoopStatus = 'completed' | 'early-stopped' | 'interrupted';

/** Train epochs state.epoch + 1 .. mode.epochs (from batch state.batchInEpoch of the first). */
export async function runEpochs<B>(state: LoopState, mode: TrainingMode<B>, o: LoopOptions): Promise<LoopStatus> {
  let status: LoopStatus = 'completed';
  epochs: for (let epoch = state.epoch + 1; epoch <= mode.epochs; epoch++) {
    const batches = mode.batches(epoch);
    const bar = progress(`${mode.label} ${epoch}/${mode.epochs}`, batches.length);
    if (state.batchInEpoch) bar.tick(state.batchInEpoch);
    const t0 = Date.now();
    try {
      for (let bi = state.batchInEpoch; bi < batches.length; bi++) {
        await yieldToEvents(); // lets a Ctrl-C (a macrotask) be seen between steps
        if (o.signal?.aborted) {
          state.epochSeconds += (Date.now() - t0) / 1000;
          status = 'interrupted';
          break epochs;
        }
        await mode.step(batches[bi], epoch);
        state.step++;
        state.batchInEpoch = bi + 1;
        bar.tick(1, mode.progress(state.epochSeconds + (Date.now() - t0) / 1000));
        o.onStep?.(state.step);
      }
    } finally {
      bar.stop();
    }
    state.epochSeconds += (Date.now() - t0) / 1000;
    const v = await mode.validate(epoch);
    if (v === 'interrupted') {
      // the checkpoint holds every step of this epoch; --resume validates
      status = 'interrupted';
      break;
    }
    closeEpoch(state, epoch, v.improved, mode.lrDecay !== undefined);
    mode.resetSums();
    if (v.improved) await mode.saveBest();
    const next = nextStep(state, v.improved, mode);
    if (next.stop) {
      log.info(mode.stopMessage());
    } else if (next.decayed) {
      log.info(`learning rate ${next.decayed.from.toPrecision(3)} -> ${next.decayed.to.toPrecision(3)}`);
      mode.setLearningRate(next.decayed.to);
    }
    await mode.saveLast();
    await mode.writeHistory();
    if (next.stop) {
      status = 'early-stopped';
      break;
    }
    if (o.signal?.aborted) {
      // honoured even after the last epoch: the user asked to stop, and the checkpoint is complete
      status = 'interrupted';
      break;
    }
  }
  if (status === 'interrupted') {
    await mode.saveLast();
    logInterrupted(o.lastDir, state, mode.epochs);
  }
  return status;
}

/** One turn of the event loop, so signal handlers run during long stretches of awaited tensor reads. */
export const yieldToEvents = () => new Promise<void>((resolve) => setImmediate(resolve));
