// The one step interface of cross-entropy training (see trainer.ts for the two implementations): the Trainer
// every caller drives, its options and results, and TrainerBase, what both implementations share: the one Adam
// (src/train/adam.ts) they update, its checkpoint, the batch checks and the one-step-at-a-time guard.
import { ModelError } from '../errors.js';
import type { tf } from '../tf/tf.js';
import type { CaptionBatch, FeatureNorm } from '../model/decoders/batch.js';
import type { NamedArray } from '../model/io.js';
import type { Adam } from './adam.js';
import type { OptimizerState } from './checkpoint.js';
import type { ReplicaKind, ReplicaSpec, TrainableDecoder } from './parallel/replica.js';

export interface TrainerOptions {
  kind: ReplicaKind;
  spec: ReplicaSpec;
  /** Initial weights by name (a fresh model's, or a checkpoint's); read from `model` when it is given. */
  weights?: Record<string, Float32Array>;
  norm: FeatureNorm;
  /** 'auto': one per core (os.availableParallelism). */
  workers: number | 'auto';
  learningRate: number;
  clipNorm?: number;
  beta1?: number;
  beta2?: number;
  epsilon?: number;
  /** Label smoothing of the cross-entropy (train.labelSmoothing; 0 or absent: none). */
  labelSmoothing?: number;
  /** workers 1: train this decoder's own variables (its weights are `weights`) instead of a new replica. */
  model?: TrainableDecoder;
  /**
   * Who applies Adam when workers > 1: 'partitioned' (default; each worker reduces and updates its own block-
   * aligned range, so the serial part of a step halves) or 'main' (the main thread does it all). Both give the
   * same bytes.
   */
  update?: 'main' | 'partitioned';
}

export interface StepTimings {
  /** Slowest replica's weight refresh and gradient computation, ms (the main thread: no refresh, 0). */
  load: number;
  compute: number;
  /** Reduction + norm + Adam (including message round trips), ms. */
  update: number;
  /** Thread CPU time of the busiest replica's refresh + gradient, ms (Linux; NaN elsewhere). */
  cpu: number;
  total: number;
}

export interface StepResult {
  /** Mean next-word cross-entropy over the batch's real targets (what validation reports). */
  loss: number;
  /** The whole objective the update minimised (cross-entropy plus any regulariser). */
  total: number;
  /** Real targets in the batch. */
  tokens: number;
  /** Global gradient norm before clipping. */
  norm: number;
  ms: StepTimings;
}

export interface Trainer {
  /** Number of replicas actually used (1: the main thread). */
  readonly workers: number;
  /** Updates applied so far. */
  readonly iterations: number;
  learningRate: number;
  /** One optimizer step on `batch` (`seed`: its dropout masks). Await each step before the next. */
  step(batch: CaptionBatch, seed: number): Promise<StepResult>;
  /** Copies of the current weights, by name. */
  readWeights(): Promise<Record<string, Float32Array>>;
  /** Bring a main-thread model's variables to the current weights (for validation and saving). */
  copyTo(model: { weights: Record<string, tf.Variable> }): void;
  /** The Adam state in the checkpoint format of src/train/adam.ts (m/<name>, v/<name>). */
  state(): Promise<OptimizerState>;
  restore(iterations: number, learningRate: number, arrays: Map<string, NamedArray>): void;
  /** Free the replica(s) and end any worker (idempotent). */
  dispose(): Promise<void>;
}

/**
 * The shared half of a Trainer: step() checks the batch, refuses a second step while one runs and any step
 * after a failed one (a failed update may have left the weights half-updated), and runs the subclass's
 * update; the learning rate, the step count and the checkpoint are the Adam's.
 */
export abstract class TrainerBase implements Trainer {
  abstract readonly workers: number;
  private busy = false;
  private broken: Error | undefined;
  protected disposed = false;

  constructor(
    protected readonly adam: Adam,
    /** Floats per image of a batch. */
    protected readonly featureSize: number,
    /** Names the trainer in its errors. */
    private readonly what: string,
  ) {}

  get iterations(): number {
    return this.adam.iterations;
  }
  get learningRate(): number {
    return this.adam.learningRate;
  }
  set learningRate(lr: number) {
    this.adam.learningRate = lr;
  }

  async step(batch: CaptionBatch, seed: number): Promise<StepResult> {
    if (this.disposed) throw new Error(`${this.what}: step after dispose`);
    if (this.broken) throw this.broken;
    if (batch.images.length !== batch.size * this.featureSize)
      throw new ModelError(
        `batch: ${batch.images.length} feature values for ${batch.size} images of ${this.featureSize}`,
      );
    if (batch.targets.length === 0) throw new ModelError('batch: no target tokens');
    this.checkBatch(batch);
    if (this.busy) throw new Error(`${this.what}: step() called while another step is running; await each step`);
    this.busy = true;
    try {
      return await this.update(batch, seed);
    } catch (e) {
      this.broken = e as Error;
      throw e;
    } finally {
      this.busy = false;
    }
  }

  /** More checks of a batch before anything runs (a refusal here leaves the trainer usable). */
  protected checkBatch(_batch: CaptionBatch): void {}

  /** The gradient and the update of one step. */
  protected abstract update(batch: CaptionBatch, seed: number): Promise<StepResult>;

  abstract readWeights(): Promise<Record<string, Float32Array>>;
  abstract copyTo(model: { weights: Record<string, tf.Variable> }): void;

  state(): Promise<OptimizerState> {
    return this.adam.state();
  }

  restore(iterations: number, learningRate: number, arrays: Map<string, NamedArray>): void {
    this.adam.restore(iterations, learningRate, arrays);
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.close();
  }

  /** Free what the trainer holds (once). */
  protected abstract close(): Promise<void>;
}
