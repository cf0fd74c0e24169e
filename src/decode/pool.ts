// Decoding on every core (config `decode.workers`): a BatchDecoder decodes feature vectors in batches of
// decode.batchSize, either on the main thread (workers 1: decodeFeatures on the configured backend, as
// before) or in N worker threads (./worker.ts), each holding a copy of the decoder on its own wasm (or cpu)
// backend. Whole batches are handed to idle workers in order (features transferred as one flat
// Float32Array) and the results put back in input order. Each batch is decoded exactly as decodeFeatures
// decodes it on the main thread, so the captions, log-probabilities and attention rows are identical to
// workers 1 on the same backend.
//
// The workers are terminated by dispose(), on a worker crash (the batches in flight and every later call
// fail with an error naming the cause; a ModelError from a worker stays a ModelError) and on `signal`
// abort (the calls in flight reject with an AbortError). The main thread makes no tensors here.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { ConfigError, ModelError } from '../errors.js';
import { log } from '../log.js';
import { builtFile, userErrorFrom } from '../util/workers.js';
import { tf } from '../tf/tf.js';
import { shareBlasThreads } from '../tf/native.js';
import { decodeFeatures, type DecodedCaption, type DecodeModel, type DecodeSettings } from './decode.js';

export interface BatchDecoder {
  /** Worker threads decoding (1: the main thread). */
  readonly workers: number;
  /** The tfjs backend the decoding runs on ('wasm', 'cpu', 'tensorflow', ...). */
  readonly backend: string;
  /** Caption every feature vector in batches of cfg.batchSize (spread over the workers); results in input order. */
  decode(features: Float32Array[], cfg: DecodeSettings): Promise<DecodedCaption[]>;
  /** Terminate the workers (idempotent; calls still in flight reject). The model stays the caller's. */
  dispose(): Promise<void>;
}

/** Given to a decode worker as workerData. */
export interface DecodeWorkerInit {
  backend: 'wasm' | 'cpu';
  type: string;
  spec: unknown;
  weights: Record<string, Float32Array>;
  norm: { mean: Float32Array; std: Float32Array };
  vocab: string[];
}

export type ToDecodeWorker = { op: 'decode'; id: number; flat: Float32Array; n: number; cfg: DecodeSettings };

export type FromDecodeWorker =
  | { op: 'ready' }
  | { op: 'done'; id: number; results: DecodedCaption[] }
  | { op: 'error'; id: number; name: string; message: string };

/**
 * The worker count `decode.workers` means here: auto is one per core, but 1 on the native tfjs-node
 * backends ('tensorflow': the native library, or the GPU, does the work) and never more than the batches
 * there are to decode (`batches`, when known), since an idle worker only costs start-up.
 */
export function resolveDecodeWorkers(w: number | 'auto', o: { backend?: string; batches?: number; cores?: number } = {}): number {
  let n: number;
  if (w === 'auto') n = (o.backend ?? tf.getBackend()) === 'tensorflow' ? 1 : Math.max(1, o.cores ?? availableParallelism());
  else if (!Number.isInteger(w) || w < 1) throw new ConfigError(`decode.workers: expected "auto" or a positive integer, got ${JSON.stringify(w)}`);
  else n = w;
  if (o.batches !== undefined) n = Math.min(n, Math.max(1, o.batches));
  return n;
}

/** The compiled worker entry (dist/decode/worker.js), also when this module runs from src/ (tests). */
export function decodeWorkerFile(): string {
  return builtFile('parallel decoding', 'decode', 'worker.js');
}

export interface StartDecoderOptions {
  /** Resolved worker count (resolveDecodeWorkers); 1 decodes on the main thread. */
  workers: number;
  /** Backend of the worker threads (default: cpu when the main thread runs cpu, else wasm). */
  backend?: 'wasm' | 'cpu';
  /** Abort: terminate the workers; calls in flight reject with an AbortError. */
  signal?: AbortSignal;
  /** The main thread's backend as the log names it (for the warning that the workers cannot use a native one). */
  mainBackend?: string;
}

/** A BatchDecoder for `model` (whose decoder and vocabulary stay the caller's to dispose). */
export async function startDecoder(model: DecodeModel, o: StartDecoderOptions): Promise<BatchDecoder> {
  if (o.workers <= 1) {
    return {
      workers: 1,
      backend: tf.getBackend(),
      decode: (features, cfg) => decodeFeatures(model, features, cfg),
      dispose: async () => {},
    };
  }
  const main = tf.getBackend();
  if (main === 'tensorflow') log.warn(`decode.workers ${o.workers}: the workers decode on wasm, not on the ${o.mainBackend ?? main} backend; set decode.workers 1 to decode there`);
  const backend = o.backend ?? (main === 'cpu' ? 'cpu' : 'wasm');
  const { decoder, vocab } = model;
  const init: DecodeWorkerInit = {
    backend,
    type: decoder.type,
    spec: decoder.spec,
    weights: await decoder.readWeights(),
    norm: { mean: decoder.norm.mean, std: decoder.norm.std },
    vocab: [...vocab.tokens],
  };
  return new WorkerPool(decodeWorkerFile(), o.workers, backend, init, o.signal).ready();
}

/** An AbortError (what fetch and timers reject with), so callers can tell an interruption from a failure. */
export function abortError(signal?: AbortSignal): Error {
  const reason = signal?.reason;
  if (reason instanceof Error && reason.name === 'AbortError') return reason;
  const e = new Error('decoding was interrupted');
  e.name = 'AbortError';
  return e;
}

/** Rebuild a worker's error on this side: user-fixable kinds keep their class (and exit code). */
function errorFrom(index: number, name: string, message: string): Error {
  return userErrorFrom(name, message) ?? new Error(`parallel decoding: worker ${index} failed: ${name}: ${message}`);
}

interface Task {
  id: number;
  features: Float32Array[];
  cfg: DecodeSettings;
  resolve: (r: DecodedCaption[]) => void;
  reject: (e: Error) => void;
}

class WorkerPool implements BatchDecoder {
  private readonly threads: Worker[] = [];
  private readonly idle: number[] = [];
  private readonly queue: Task[] = [];
  /** Task running on worker i. */
  private readonly running = new Map<number, Task>();
  private nextId = 0;
  private broken: Error | undefined;
  private closing = false;
  private readonly started: Promise<void>;
  private stopStart: (e: Error) => void = () => {};
  private readonly onAbort = () => this.fail(abortError(this.signal));
  private readonly undoBlas: () => void;

  constructor(
    file: string,
    readonly workers: number,
    readonly backend: string,
    init: DecodeWorkerInit,
    private readonly signal?: AbortSignal,
  ) {
    const ready: Promise<void>[] = [];
    this.undoBlas = shareBlasThreads(workers); // each worker's products on cores / workers BLAS threads
    for (let i = 0; i < workers; i++) {
      const w = new Worker(file, { workerData: init });
      this.threads.push(w);
      let why = '';
      ready.push(
        new Promise<void>((resolve, reject) => {
          w.on('message', (msg: FromDecodeWorker) => {
            if (msg.op === 'ready') {
              this.idle.push(i);
              resolve();
              this.pump();
              this.refIdle();
              return;
            }
            if (msg.op === 'error' && msg.id < 0) {
              reject(errorFrom(i, msg.name, msg.message));
              return;
            }
            const t = this.running.get(i);
            if (!t || t.id !== msg.id) return;
            this.running.delete(i);
            this.idle.push(i);
            if (msg.op === 'done') t.resolve(msg.results);
            else t.reject(errorFrom(i, msg.name, msg.message));
            this.pump();
            this.refIdle();
          });
          w.on('error', (e) => (why = `${e.name === 'Error' ? '' : `${e.name}: `}${e.message}`));
          w.on('exit', (code) => {
            if (this.closing) return;
            const e = new Error(`parallel decoding: worker ${i} crashed (${why || `exit code ${code}`})`);
            reject(e);
            this.fail(e);
          });
        }),
      );
    }
    this.started = new Promise<void>((resolve, reject) => {
      this.stopStart = reject;
      Promise.all(ready).then(() => resolve(), reject);
    });
    this.started.catch(() => {}); // surfaced by ready()
    if (signal) {
      if (signal.aborted) this.onAbort();
      else signal.addEventListener('abort', this.onAbort, { once: true });
    }
  }

  /** Resolves once every worker has built its decoder; on failure terminates them all and rejects. */
  async ready(): Promise<this> {
    try {
      await this.started;
      if (this.broken) throw this.broken;
    } catch (e) {
      await this.dispose();
      throw this.broken ?? e;
    }
    return this;
  }

  async decode(features: Float32Array[], cfg: DecodeSettings): Promise<DecodedCaption[]> {
    if (this.broken) throw this.broken;
    if (this.closing) throw new Error('parallel decoding: decode after dispose');
    const size = Math.max(1, cfg.batchSize ?? 32);
    const D = features[0]?.length ?? 0;
    const bad = features.findIndex((f) => f.length !== D);
    if (bad >= 0) throw new ModelError(`decode: image feature ${bad} has ${features[bad].length} values, image feature 0 has ${D}`);
    const parts: Promise<DecodedCaption[]>[] = [];
    for (let i = 0; i < features.length; i += size) {
      const chunk = features.slice(i, i + size);
      parts.push(new Promise<DecodedCaption[]>((resolve, reject) => this.queue.push({ id: this.nextId++, features: chunk, cfg: { ...cfg, batchSize: size }, resolve, reject })));
    }
    parts.forEach((p) => p.catch(() => {})); // each is awaited below; the first failure is the news
    this.pump();
    return (await Promise.all(parts)).flat();
  }

  /** Hand queued batches, in order, to idle workers. */
  private pump(): void {
    while (!this.broken && !this.closing && this.queue.length && this.idle.length) {
      const i = this.idle.shift()!;
      const t = this.queue.shift()!;
      const D = t.features[0].length;
      const flat = new Float32Array(t.features.length * D); // [n, D], a copy: the caller's arrays stay usable
      t.features.forEach((f, k) => flat.set(f, k * D));
      this.running.set(i, t);
      this.threads[i].ref(); // busy: keeps the process alive until its batch is back
      const msg: ToDecodeWorker = { op: 'decode', id: t.id, flat, n: t.features.length, cfg: t.cfg };
      this.threads[i].postMessage(msg, [flat.buffer]);
    }
  }

  /**
   * An idle worker does not keep the process alive (unref), so a library caller that never calls dispose()
   * can still exit; a busy one does (ref in pump). Workers start ref'd: loading must finish.
   */
  private refIdle(): void {
    for (const i of this.idle) this.threads[i].unref();
  }

  /** Reject everything pending and in flight with `e`, and end the workers. */
  private fail(e: Error): void {
    if (!this.broken) this.broken = e;
    this.stopStart(this.broken);
    for (const t of this.queue.splice(0)) t.reject(this.broken);
    for (const t of this.running.values()) t.reject(this.broken);
    this.running.clear();
    void this.dispose();
  }

  async dispose(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.signal?.removeEventListener('abort', this.onAbort);
    const closed = new Error('parallel decoding: the decoder was disposed');
    for (const t of this.queue.splice(0)) t.reject(this.broken ?? closed);
    for (const t of this.running.values()) t.reject(this.broken ?? closed);
    this.running.clear();
    await Promise.all(this.threads.map((w) => w.terminate()));
    this.undoBlas();
  }
}
