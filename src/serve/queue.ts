// The request queue in front of the model: bounded (a full queue refuses instead of growing), and
// batching (requests that arrive within a few milliseconds of each other share one captionBatch call).
// One batch runs at a time: the model is compute-bound, so running two at once would only make both
// slower. Requests asking for different beam sizes go to different batches.
// Fair between clients (each request names its client, the server's key of its address): a batch is
// filled by the clients in turn, one image each round, starting with the client whose turn it is, and
// a client served goes to the back; so one client's 40 queued images delay another's at most by the
// batch in progress. A full queue takes an image from a client with fewer waiting in place of the
// newest image of the client with the most (which is refused), so one client cannot fill it either.
// No HTTP here.
import type { CaptionOptions, CaptionOutcome, ImageInput } from '../caption/types.js';

export interface QueueOptions {
  /** Most requests per batch. */
  maxBatch: number;
  /** Most requests waiting (not counting the batch being captioned); more are refused. */
  queueSize: number;
  /** How long an idle queue waits for company before it starts a batch that is not full. */
  windowMs: number;
  /**
   * Most pixels (the images' own sizes, which decoding costs) in one batch; the first image of a batch
   * is always taken. Undefined: no limit. Keeps a batch of huge images small, so an image queued
   * after them does not wait for many of them.
   */
  maxBatchPixels?: number;
}

export interface SubmitOptions {
  /** Beam size (undefined: the model's default); only requests with the same beam share a batch. */
  beam?: number;
  /** Aborting it takes the request out of the queue while it waits. */
  signal?: AbortSignal;
  /** Whose request it is (the server's key of the client's address): clients take turns. */
  client?: string;
  /** The image's pixel count, for maxBatchPixels. */
  pixels?: number;
}

export type RunBatch = (inputs: ImageInput[], options: CaptionOptions) => Promise<CaptionOutcome[]>;

/** Thrown (as a rejection) by submit when the queue is full, or for an image a fairer one displaced. */
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
  client: string;
  pixels: number;
  resolve(o: CaptionOutcome): void;
  reject(e: unknown): void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

export class BatchQueue {
  /** Waiting jobs, oldest first. */
  private waitingJobs: Job[] = [];
  /** Clients with jobs waiting, in the order they get their turn. */
  private turns: string[] = [];
  private perClient = new Map<string, number>();
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

  /** Requests of `client` waiting for a batch. */
  waitingOf(client: string): number {
    return this.perClient.get(client) ?? 0;
  }

  /** Whether a batch is being captioned now. */
  get busy(): boolean {
    return this.running;
  }

  /** Whether an image from `client` would be queued now (the server asks before reading an upload). */
  accepts(client = ''): boolean {
    return this.waitingJobs.length < this.opts.queueSize || this.displaceable(client) !== undefined;
  }

  /**
   * Queue one image for `client`. Resolves with its outcome; rejects with QueueFullError when the queue
   * is full (or when a fairer image later takes its place), CancelledError when `signal` aborts before
   * its batch starts, or whatever captionBatch threw.
   */
  submit(input: ImageInput, { beam, signal, client = '', pixels = 0 }: SubmitOptions = {}): Promise<CaptionOutcome> {
    if (this.waitingJobs.length >= this.opts.queueSize) {
      const victim = this.displaceable(client);
      if (victim === undefined) return Promise.reject(new QueueFullError(this.waitingJobs.length));
      // the newest image of the client with the most waiting makes room
      let i = this.waitingJobs.length - 1;
      while (this.waitingJobs[i].client !== victim) i--;
      const job = this.waitingJobs[i];
      this.remove(job);
      job.reject(new QueueFullError(this.waitingJobs.length + 1));
    }
    if (signal?.aborted) return Promise.reject(new CancelledError());
    return new Promise<CaptionOutcome>((resolve, reject) => {
      const job: Job = { input, beam, client, pixels, resolve, reject, signal };
      if (signal) {
        job.onAbort = () => {
          if (this.remove(job)) {
            reject(new CancelledError());
            this.checkIdle();
          }
        };
        signal.addEventListener('abort', job.onAbort, { once: true });
      }
      this.waitingJobs.push(job);
      const n = this.waitingOf(client);
      this.perClient.set(client, n + 1);
      if (n === 0) this.turns.push(client);
      this.schedule();
    });
  }

  /** The client whose newest image would give way to one from `client` in a full queue: one with at least two more waiting. */
  private displaceable(client: string): string | undefined {
    let most: string | undefined;
    for (const [c, n] of this.perClient) if (most === undefined || n > this.waitingOf(most)) most = c;
    return most !== undefined && most !== client && this.waitingOf(most) > this.waitingOf(client) + 1
      ? most
      : undefined;
  }

  /** Take a waiting job out of the queue (false when it is not waiting). */
  private remove(job: Job): boolean {
    const i = this.waitingJobs.indexOf(job);
    if (i < 0) return false;
    this.waitingJobs.splice(i, 1);
    if (job.onAbort) job.signal?.removeEventListener('abort', job.onAbort);
    this.took(job.client, 1);
    return true;
  }

  /** `n` jobs of `client` left the waiting list. */
  private took(client: string, n: number): void {
    const left = this.waitingOf(client) - n;
    if (left > 0) this.perClient.set(client, left);
    else {
      this.perClient.delete(client);
      this.turns = this.turns.filter((c) => c !== client);
    }
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
    // The client whose turn it is chooses the beam (its oldest image's); then the clients take turns,
    // one image each round (their oldest with that beam), until the batch is full: maxBatch images, or
    // no client's next image fits in maxBatchPixels. Other beams wait.
    const beam = this.waitingJobs.find((j) => j.client === this.turns[0])!.beam;
    const byClient = new Map<string, Job[]>();
    for (const job of this.waitingJobs) {
      if (job.beam !== beam) continue;
      const list = byClient.get(job.client);
      if (list) list.push(job);
      else byClient.set(job.client, [job]);
    }
    const batch: Job[] = [];
    const served = new Set<string>();
    const budget = this.opts.maxBatchPixels ?? Infinity;
    let pixels = 0;
    let last = 0; // where in `turns` the last image came from
    for (let progress = true; progress && batch.length < this.opts.maxBatch; ) {
      progress = false;
      for (let i = 0; i < this.turns.length && batch.length < this.opts.maxBatch; i++) {
        const list = byClient.get(this.turns[i]);
        const job = list?.[0];
        if (!job || (batch.length > 0 && pixels + job.pixels > budget)) continue;
        list.shift();
        pixels += job.pixels;
        batch.push(job);
        served.add(job.client);
        last = i;
        progress = true;
      }
    }
    const taken = new Set(batch);
    this.waitingJobs = this.waitingJobs.filter((j) => !taken.has(j));
    // The next turn is the client after the one that got the last image; clients that got nothing
    // (other beams) go first.
    const rotated = [...this.turns.slice(last + 1), ...this.turns.slice(0, last + 1)];
    this.turns = [...rotated.filter((c) => !served.has(c)), ...rotated.filter((c) => served.has(c))];
    for (const client of served) this.took(client, batch.filter((j) => j.client === client).length);
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
        throw new Error(
          `captionBatch returned ${Array.isArray(outcomes) ? outcomes.length : 'no'} outcomes for ${batch.length} images`,
        );
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
