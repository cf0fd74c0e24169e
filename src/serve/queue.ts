// The request queue in front of the model: bounded (a full queue refuses instead of growing), and
// batching (requests that arrive within a few milliseconds of each other share one captionBatch call).
// One batch runs at a time: the model is compute-bound, so running two at once would only make both
// slower. Requests asking for different beam sizes go to different batches. No HTTP here.
import type { CaptionOptions, CaptionOutcome, ImageInput } from '../caption/types.js';

export interface QueueOptions {
  /** Most requests per batch. */
  maxBatch: number;
  /** Most requests waiting (not counting the batch being captioned); more are refused. */
  queueSize: number;
  /** How long an idle queue waits for company before it starts a batch that is not full. */
  windowMs: number;
}

export type RunBatch = (inputs: ImageInput[], options: CaptionOptions) => Promise<CaptionOutcome[]>;

/** Thrown (as a rejection) by submit when the queue is full. */
export class QueueFullError extends Error {
  constructor(size: number) {
    super(`queue full (${size} requests waiting)`);
  }
}

/** Rejection of a request whose signal was aborted while it waited. */
export class CancelledError extends Error {
  constructor() {
    super('request cancelled');
  }
}

interface Job {
  input: ImageInput;
  beam: number | undefined;
  resolve(o: CaptionOutcome): void;
  reject(e: unknown): void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

export class BatchQueue {
  private waitingJobs: Job[] = [];
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  private idleWaiters: (() => void)[] = [];
  /** Sizes of the batches run so far (for logs and tests). */
  readonly batchSizes: number[] = [];

  constructor(
    private readonly run: RunBatch,
    private readonly opts: QueueOptions,
  ) {}

  /** Requests waiting for a batch. */
  get waiting(): number {
    return this.waitingJobs.length;
  }

  /** Whether a batch is being captioned now. */
  get busy(): boolean {
    return this.running;
  }

  /**
   * Queue one image. Resolves with its outcome; rejects with QueueFullError when the queue is full,
   * CancelledError when `signal` aborts before its batch starts, or whatever captionBatch threw.
   */
  submit(input: ImageInput, beam?: number, signal?: AbortSignal): Promise<CaptionOutcome> {
    if (this.waitingJobs.length >= this.opts.queueSize) return Promise.reject(new QueueFullError(this.waitingJobs.length));
    if (signal?.aborted) return Promise.reject(new CancelledError());
    return new Promise<CaptionOutcome>((resolve, reject) => {
      const job: Job = { input, beam, resolve, reject, signal };
      if (signal) {
        job.onAbort = () => {
          const i = this.waitingJobs.indexOf(job);
          if (i >= 0) {
            this.waitingJobs.splice(i, 1);
            reject(new CancelledError());
            this.checkIdle();
          }
        };
        signal.addEventListener('abort', job.onAbort, { once: true });
      }
      this.waitingJobs.push(job);
      this.schedule();
    });
  }

  /** Resolves once nothing is waiting or running. */
  idle(): Promise<void> {
    if (!this.running && this.waitingJobs.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private schedule(): void {
    if (this.running) return; // the running batch pumps again when it finishes
    if (this.waitingJobs.length >= this.opts.maxBatch || this.opts.windowMs === 0) {
      this.clearTimer();
      queueMicrotask(() => this.pump());
    } else if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.pump();
      }, this.opts.windowMs);
    }
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private pump(): void {
    if (this.running || this.waitingJobs.length === 0) {
      this.checkIdle();
      return;
    }
    this.clearTimer();
    // Take up to maxBatch jobs that want the same beam as the oldest one, keeping the others in order.
    const beam = this.waitingJobs[0].beam;
    const batch: Job[] = [];
    const rest: Job[] = [];
    for (const job of this.waitingJobs) {
      if (batch.length < this.opts.maxBatch && job.beam === beam) batch.push(job);
      else rest.push(job);
    }
    this.waitingJobs = rest;
    for (const job of batch) if (job.onAbort) job.signal?.removeEventListener('abort', job.onAbort);
    this.running = true;
    this.batchSizes.push(batch.length);
    void this.runBatch(batch, beam);
  }

  private async runBatch(batch: Job[], beam: number | undefined): Promise<void> {
    try {
      const outcomes = await this.run(
        batch.map((j) => j.input),
        beam === undefined ? {} : { beam },
      );
      if (!Array.isArray(outcomes) || outcomes.length !== batch.length) {
        throw new Error(`captionBatch returned ${Array.isArray(outcomes) ? outcomes.length : 'no'} outcomes for ${batch.length} images`);
      }
      batch.forEach((job, i) => job.resolve(outcomes[i]));
    } catch (e) {
      for (const job of batch) job.reject(e);
    } finally {
      this.running = false;
      // Jobs that arrived meanwhile have waited long enough: start the next batch at once.
      if (this.waitingJobs.length) queueMicrotask(() => this.pump());
      else this.checkIdle();
    }
  }

  private checkIdle(): void {
    if (this.running || this.waitingJobs.length) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
