// A Captioner that runs another Captioner inside a node:worker_threads Worker, so image decoding (sharp),
// the encoder (onnxruntime or tfjs) and beam search never block the server's event loop: health checks,
// 503s and SIGTERM are answered at once however busy the model is.
//
// The worker builds its captioner by importing `module` and calling its export `factory(...args)` (for
// `captioner serve`: dist/caption/load.js loadCaptioner(runDir, options)). captionBatch transfers each
// image's bytes to the worker (the caller's Buffers are detached: it hands them over) and gets the
// outcomes back. Crashes: when the worker dies (an uncaught error, out of memory, a native abort caught
// as an exit), the batches it was captioning fail with WorkerCrashedError (the server answers 503), one
// error line is logged, and a fresh worker is started; after `maxRestarts` crashes within a minute it
// is not restarted any more and every later batch fails with WorkerCrashedError (failure() says why, and
// the server's health reports it as status 'error', 503, so a supervisor restarts the server). dispose() asks the worker to dispose its captioner, then
// terminates it.
import * as os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { LoadCaptionerOptions } from '../caption/load.js';
import type { CaptionOptions, CaptionOutcome, Captioner, ImageInput } from '../caption/types.js';
import type { Config } from '../config/schema.js';
import { ModelError } from '../errors.js';
import { builtFile, userErrorFrom } from '../util/workers.js';
import { log } from '../log.js';
import { disableOrtTelemetry } from '../features/onnx/runtime.js';

/** Given to the worker as workerData. */
export interface WorkerInit {
  /** File path or file: URL of an ES module. */
  module: string;
  /** Name of the export that builds the Captioner: (...args) => Captioner | Promise<Captioner>. */
  factory: string;
  /** Its arguments (structured-cloned; a SharedArrayBuffer stays shared). */
  args: unknown[];
}

/** One image on its way to the worker: the bytes' ArrayBuffer is transferred, with the view's place in it. */
export interface WireInput {
  id: string;
  buffer: ArrayBuffer;
  offset: number;
  length: number;
}

export type ToWorker = { op: 'caption'; id: number; inputs: WireInput[]; options: CaptionOptions } | { op: 'dispose' };

export type FromWorker =
  | { op: 'ready'; info: Captioner['info'] }
  | { op: 'load-error'; name: string; message: string }
  | { op: 'done'; id: number; outcomes: CaptionOutcome[] }
  | { op: 'error'; id: number; name: string; message: string }
  | { op: 'disposed' };

/** A batch failed because the model worker died (or is not restarted any more): the server answers 503. */
export class WorkerCrashedError extends Error {}

export interface WorkerCaptionerOptions extends WorkerInit {
  /** Crashes within a minute after which the worker is not restarted any more (default 3). */
  maxRestarts?: number;
  /** How long dispose waits for the captioner's own dispose before terminating the worker (default 5000 ms). */
  disposeTimeoutMs?: number;
}

export interface WorkerCaptioner extends Captioner {
  /** Whether a worker thread is alive now (false after dispose, and while none could be restarted). */
  running(): boolean;
  /** Crashes so far. */
  readonly crashes: number;
  /** Why it can no longer caption (crashed too often, or could not be restarted), or null. Health reports it. */
  failure(): string | null;
}

/** The compiled worker entry (dist/serve/captioner-worker.js), also when this module runs from src/ (tests). */
export function workerEntry(): string {
  return distFile('serve', 'captioner-worker.js');
}

/** A file of the compiled build (dist/), also when this module runs from src/ (tests). */
function distFile(...parts: string[]): string {
  return builtFile('serve', ...parts);
}

/** Rebuild an error from the worker: user-fixable kinds keep their class (and exit code). */
function errorFrom(name: string, message: string): Error {
  const known = userErrorFrom(name, message);
  if (known) return known;
  const e = new Error(message);
  if (name && name !== 'Error') e.name = name;
  return e;
}

/** Start the worker, wait for its captioner to load (rejects with the loader's error), and wrap it. */
export async function startWorkerCaptioner(opts: WorkerCaptionerOptions): Promise<WorkerCaptioner> {
  const file = workerEntry();
  const init: WorkerInit = { module: opts.module, factory: opts.factory, args: opts.args };
  const maxRestarts = opts.maxRestarts ?? 3;
  type Pending = { resolve: (o: CaptionOutcome[]) => void; reject: (e: Error) => void };
  let pending = new Map<number, Pending>();
  let nextId = 0;
  let disposed = false;
  let crashes = 0;
  const crashTimes: number[] = [];
  let broken: Error | null = null;
  let worker: Worker | null = null;
  let info!: Captioner['info'];
  // Settles once the current worker has loaded its captioner (a restart replaces it).
  let ready: Promise<void>;
  let onDisposed: (() => void) | null = null;

  const spawn = (): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      disableOrtTelemetry(); // the worker's onnxruntime reads the real environment, which only this thread sets
      const w = new Worker(file, { workerData: init });
      worker = w;
      let loaded = false;
      const mine = new Map<number, Pending>();
      pending = mine;
      w.on('message', (msg: FromWorker) => {
        switch (msg.op) {
          case 'ready':
            loaded = true;
            info = msg.info;
            resolve();
            return;
          case 'load-error':
            if (worker === w) worker = null; // being terminated: no longer counts as running
            reject(errorFrom(msg.name, msg.message));
            void w.terminate();
            return;
          case 'done':
          case 'error': {
            const p = mine.get(msg.id);
            if (!p) return;
            mine.delete(msg.id);
            if (msg.op === 'done') p.resolve(msg.outcomes);
            else p.reject(errorFrom(msg.name, msg.message));
            return;
          }
          case 'disposed':
            onDisposed?.();
        }
      });
      let why = '';
      w.on('error', (e) => (why = `${e.name === 'Error' ? '' : `${e.name}: `}${e.message}`));
      w.on('exit', (code) => {
        if (worker === w) worker = null;
        if (disposed) {
          for (const p of mine.values()) p.reject(new WorkerCrashedError('the model was disposed while captioning'));
          mine.clear();
          if (!loaded) reject(new Error('the model was disposed while loading'));
          return;
        }
        const reason = why || `exit code ${code}`;
        if (!loaded) {
          reject(new ModelError(`the model worker stopped while loading the model (${reason})`));
          return;
        }
        crashed(reason, mine);
      });
    });

  const crashed = (reason: string, lost: Map<number, Pending>) => {
    crashes++;
    const now = Date.now();
    crashTimes.push(now);
    while (crashTimes.length && crashTimes[0] < now - 60_000) crashTimes.shift();
    const restart = crashTimes.length <= maxRestarts;
    const failed = lost.size;
    log.error(
      `serve: the model worker crashed (${reason}); ${failed} batch(es) in progress failed (answered 503); ` +
        (restart ? 'restarting it' : `${crashTimes.length} crashes within a minute: not restarting it; every caption request now fails with 503 until the server is restarted`),
    );
    const e = new WorkerCrashedError(`the model worker crashed while captioning (${reason})`);
    for (const p of lost.values()) p.reject(e);
    lost.clear();
    if (!restart) {
      broken = new WorkerCrashedError(`the model worker crashed ${crashTimes.length} time(s) within a minute and is not restarted; the server must be restarted`);
      ready = Promise.resolve();
      return;
    }
    ready = spawn().then(
      () => log.info('serve: the model worker is back'),
      (err: unknown) => {
        broken = new WorkerCrashedError(`the model worker could not be restarted: ${(err as Error)?.message ?? String(err)}`);
        log.error(`serve: ${broken.message}`);
      },
    );
    ready.catch(() => {});
  };

  ready = spawn();
  try {
    await ready;
  } catch (e) {
    disposed = true;
    await (worker as Worker | null)?.terminate();
    throw e;
  }

  return {
    get info() {
      return info;
    },
    get crashes() {
      return crashes;
    },
    running: () => worker !== null && !disposed,
    failure: () => (broken as Error | null)?.message ?? null,
    async captionBatch(inputs: ImageInput[], options: CaptionOptions = {}): Promise<CaptionOutcome[]> {
      if (disposed) throw new Error('captionBatch after dispose');
      // Wait for the worker to be loaded; a crash meanwhile starts another one (a new `ready`).
      for (let r = ready; ; r = ready) {
        await r;
        if (r === ready) break;
      }
      if (broken) throw broken;
      const w = worker;
      if (!w) throw new WorkerCrashedError('the model worker is not running');
      // Transfer each image's ArrayBuffer (once, even when views share one); the caller hands the bytes over.
      const transfer = new Set<ArrayBuffer>();
      const wire: WireInput[] = inputs.map(({ id, bytes }) => {
        let buffer = bytes.buffer as ArrayBuffer;
        let offset = bytes.byteOffset;
        // A shared buffer cannot be transferred, and a small Buffer may sit in Node's shared pool
        // (which must not be detached): copy those once.
        if (!(buffer instanceof ArrayBuffer) || bytes.byteLength < buffer.byteLength / 2) {
          buffer = new Uint8Array(bytes).buffer;
          offset = 0;
        }
        transfer.add(buffer);
        return { id, buffer, offset, length: bytes.byteLength };
      });
      const id = nextId++;
      const map = pending;
      return new Promise<CaptionOutcome[]>((resolve, reject) => {
        map.set(id, { resolve, reject });
        try {
          w.postMessage({ op: 'caption', id, inputs: wire, options: { ...options } } satisfies ToWorker, [...transfer]);
        } catch (e) {
          map.delete(id);
          reject(e as Error);
        }
      });
    },
    async dispose() {
      if (disposed) return;
      disposed = true;
      const w = worker;
      if (!w) return;
      // Let the captioner free what it holds (onnxruntime sessions), then end the thread in any case.
      const done = new Promise<void>((resolve) => {
        onDisposed = resolve;
        w.once('exit', () => resolve());
        setTimeout(resolve, opts.disposeTimeoutMs ?? 5000).unref();
      });
      w.postMessage({ op: 'dispose' } satisfies ToWorker);
      await done;
      await w.terminate();
      worker = null;
    },
  };
}

/** How `captioner serve` splits the cores between the HTTP thread and the model worker. */
export interface ThreadSplit {
  cores: number;
  /** onnxruntime intra-op threads in the worker (also what the wasm backend is asked for). */
  modelThreads: number;
  line: string;
}

/**
 * `threads` 0 (the default): onnxruntime gets every core but one, which stays for the main thread (HTTP,
 * uploads, health); with one core, both share it. A positive `threads` is used as given.
 */
export function threadSplit(threads: number, cores = os.availableParallelism()): ThreadSplit {
  const modelThreads = threads > 0 ? threads : Math.max(1, cores - 1);
  const why = threads > 0 ? `threads: ${threads}` : cores > 1 ? 'every core but one, which is left for HTTP' : 'the only core, shared with HTTP';
  const line =
    `serve: the model runs in a worker thread: onnxruntime ${modelThreads} intra-op thread${modelThreads === 1 ? '' : 's'} (${why}); ` +
    `image decoding and tfjs run there between encoder runs; HTTP on the main thread; ${cores} core${cores === 1 ? '' : 's'}`;
  return { cores, modelThreads, line };
}

/**
 * The model of a run folder, loaded in a worker as `captioner serve` runs it (loadCaptioner there, with
 * `options`, which must be structured-cloneable: no weights in memory).
 */
export async function startModelWorker(runDir: string, config: Config, options: Omit<LoadCaptionerOptions, 'config' | 'threads' | 'vgg16Weights'> = {}): Promise<WorkerCaptioner> {
  const split = threadSplit(config.threads);
  log.info(split.line);
  const loadOptions: LoadCaptionerOptions = { ...options, config, threads: split.modelThreads };
  return startWorkerCaptioner({ module: distFile('caption', 'load.js'), factory: 'loadCaptioner', args: [runDir, loadOptions] });
}
