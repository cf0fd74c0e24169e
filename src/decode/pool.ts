// Decoding on every core (config `decode.workers`): a BatchDecoder decodes feature vectors in batches of
// decode.batchSize, either on the main thread (workers 1: decodeFeatures on the configured backend, as
// before) or in N worker threads (./worker.ts, through src/util/rpc.ts), each holding a copy of the decoder
// on its own wasm (or cpu) backend. Whole batches are handed to idle workers in order (features transferred
// as one flat Float32Array) and the results put back in input order. Each batch is decoded exactly as
// decodeFeatures decodes it on the main thread, so the captions, log-probabilities and attention rows are
// identical to workers 1 on the same backend.
//
// The workers are terminated by dispose(), on a worker crash (the batches in flight and every later call
// fail with an error naming the cause; a ModelError from a worker stays a ModelError) and on `signal`
// abort (the calls in flight reject with an AbortError). An idle pool does not keep the process alive (a
// library caller that never disposes it can still exit). The main thread makes no tensors here.
import { availableParallelism } from 'node:os';
import { ConfigError, ModelError } from '../errors.js';
import { log } from '../log.js';
import { startWorkers, workerEntry, type RpcWorker } from '../util/rpc.js';
import { tf } from '../tf/tf.js';
import { shareBlasThreads } from '../tf/addon.js';
import { decodeFeatures, type DecodedCaption, type DecodeModel, type DecodeSettings } from './decode.js';
import type { DecodeWorkerApi, DecodeWorkerInit } from './worker.js';

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

/**
 * The worker count `decode.workers` means here: auto is one per core, but 1 on the native tfjs-node
 * backends ('tensorflow': the native library, or the GPU, does the work) and never more than the batches
 * there are to decode (`batches`, when known), since an idle worker only costs start-up.
 */
export function resolveDecodeWorkers(
  w: number | 'auto',
  o: { backend?: string; batches?: number; cores?: number } = {},
): number {
  let n: number;
  if (w === 'auto')
    n = (o.backend ?? tf.getBackend()) === 'tensorflow' ? 1 : Math.max(1, o.cores ?? availableParallelism());
  else if (!Number.isInteger(w) || w < 1)
    throw new ConfigError(`decode.workers: expected "auto" or a positive integer, got ${JSON.stringify(w)}`);
  else n = w;
  if (o.batches !== undefined) n = Math.min(n, Math.max(1, o.batches));
  return n;
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
  if (o.signal?.aborted) throw abortError(o.signal);
  const main = tf.getBackend();
  if (main === 'tensorflow')
    log.warn(
      `decode.workers ${o.workers}: the workers decode on wasm, not on the ${o.mainBackend ?? main} backend; set decode.workers 1 to decode there`,
    );
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
  const entry = workerEntry(import.meta.url, 'worker');
  const undoBlas = shareBlasThreads(o.workers); // with the addon: each worker's products on its own thread (1 BLAS thread)
  const list = Array.from({ length: o.workers }, (_, i) => ({
    entry,
    data: init,
    label: `parallel decoding: worker ${i}`,
  }));
  let threads: RpcWorker<DecodeWorkerApi>[];
  try {
    // an abort while they start ends them at once
    threads = await startWorkers<DecodeWorkerApi>(list, { signal: o.signal, reason: () => abortError(o.signal) });
  } catch (e) {
    undoBlas();
    throw e;
  }
  return new WorkerPool(threads, backend, undoBlas, o.signal);
}

/** An AbortError (what fetch and timers reject with), so callers can tell an interruption from a failure. */
export function abortError(signal?: AbortSignal): Error {
  const reason = signal?.reason;
  if (reason instanceof Error && reason.name === 'AbortError') return reason;
  const e = new Error('decoding was interrupted');
  e.name = 'AbortError';
  return e;
}

interface Task {
  features: Float32Array[];
  cfg: DecodeSettings;
  resolve: (r: DecodedCaption[]) => void;
  reject: (e: Error) => void;
}

class WorkerPool implements BatchDecoder {
  readonly workers: number;
  private readonly idle: number[] = [];
  private readonly queue: Task[] = [];
  private broken: Error | undefined;
  private closed: Promise<void> | undefined;
  private readonly onAbort = () => this.fail(abortError(this.signal));

  constructor(
    private readonly threads: RpcWorker<DecodeWorkerApi>[],
    readonly backend: string,
    private readonly undoBlas: () => void,
    private readonly signal?: AbortSignal,
  ) {
    this.workers = threads.length;
    threads.forEach((t, i) => {
      this.idle.push(i);
      // one worker dying ends the pool: its batch already failed with the crash, the rest fail with it too
      void t.exited.then(({ crash }) => crash && this.fail(crash));
    });
    if (signal) {
      if (signal.aborted) this.onAbort();
      else signal.addEventListener('abort', this.onAbort, { once: true });
    }
  }

  async decode(features: Float32Array[], cfg: DecodeSettings): Promise<DecodedCaption[]> {
    if (this.broken) throw this.broken;
    if (this.closed) throw new Error('parallel decoding: decode after dispose');
    const size = Math.max(1, cfg.batchSize ?? 32);
    const D = features[0]?.length ?? 0;
    const bad = features.findIndex((f) => f.length !== D);
    if (bad >= 0)
      throw new ModelError(`decode: image feature ${bad} has ${features[bad].length} values, image feature 0 has ${D}`);
    const parts: Promise<DecodedCaption[]>[] = [];
    for (let i = 0; i < features.length; i += size) {
      const chunk = features.slice(i, i + size);
      parts.push(
        new Promise<DecodedCaption[]>((resolve, reject) =>
          this.queue.push({ features: chunk, cfg: { ...cfg, batchSize: size }, resolve, reject }),
        ),
      );
    }
    parts.forEach((p) => p.catch(() => {})); // each is awaited below; the first failure is the news
    this.pump();
    return (await Promise.all(parts)).flat();
  }

  /** Hand queued batches, in order, to idle workers. */
  private pump(): void {
    while (!this.broken && !this.closed && this.queue.length && this.idle.length) {
      const i = this.idle.shift()!;
      const t = this.queue.shift()!;
      const D = t.features[0].length;
      const flat = new Float32Array(t.features.length * D); // [n, D], a copy: the caller's arrays stay usable
      t.features.forEach((f, k) => flat.set(f, k * D));
      this.threads[i].call('decode', { flat, n: t.features.length, cfg: t.cfg }, [flat.buffer]).then(
        (results) => {
          this.idle.push(i);
          t.resolve(results);
          this.pump();
        },
        (e: Error) => {
          // a batch's own error leaves the worker usable; a crash or close has already ended the pool
          if (this.threads[i].alive) this.idle.push(i);
          t.reject(this.broken ?? e);
          this.pump();
        },
      );
    }
  }

  /** Reject everything queued and in flight with `e`, and end the workers. */
  private fail(e: Error): void {
    if (!this.broken) this.broken = e;
    for (const t of this.queue.splice(0)) t.reject(this.broken);
    void this.close(this.broken);
  }

  dispose(): Promise<void> {
    return this.close(new Error('parallel decoding: the decoder was disposed'));
  }

  /** Terminate every worker (once); calls in flight reject with `reason`. Resolves when every thread has exited. */
  private close(reason: Error): Promise<void> {
    this.closed ??= (async () => {
      this.signal?.removeEventListener('abort', this.onAbort);
      for (const t of this.queue.splice(0)) t.reject(this.broken ?? reason);
      await Promise.all(this.threads.map((w) => w.terminate(this.broken ?? reason)));
      this.undoBlas();
    })();
    return this.closed;
  }
}
