// A Captioner that runs another Captioner inside a worker thread (./worker.ts, through src/util/rpc.ts), so
// image decoding (sharp), the encoder (onnxruntime or tfjs) and beam search never block the server's event
// loop: health checks, 503s and SIGTERM are answered at once however busy the model is.
//
// The worker builds its captioner by importing `module` and calling its export `factory(...args)` (for
// `captioner serve`: src/caption/load.ts loadCaptioner(runDir, options), from the build this module runs
// from). captionBatch transfers each image's bytes to the worker (the caller's Buffers are detached: it hands
// them over) and gets the outcomes back. Crashes: when the worker dies (an uncaught error, out of memory, a
// native abort caught as an exit), the batches it was captioning fail with WorkerCrashedError (the server
// answers 503), one error line is logged, and a fresh worker is started; after `maxRestarts` crashes within a
// minute it is not restarted any more and every later batch fails with WorkerCrashedError (failure() says
// why, and the server's health reports it as status 'error', 503, so a supervisor restarts the server).
// dispose() asks the worker to dispose its captioner, then terminates it.
import * as os from 'node:os';
import type { LoadCaptionerOptions } from '../caption/load.js';
import type { CaptionOptions, CaptionOutcome, Captioner, ImageInput } from '../caption/types.js';
import type { Config } from '../config/schema.js';
import { ModelError } from '../errors.js';
import { disableOrtTelemetry } from '../features/onnx/runtime.js';
import { startWorker, WorkerCrashedError, workerEntry, type RpcWorker } from '../util/rpc.js';
import { log } from '../log.js';
import type { ModelWorkerApi, ModelWorkerInit, WireInput } from './worker.js';

export { WorkerCrashedError };
export type { ModelWorkerInit as WorkerInit };

export interface WorkerCaptionerOptions extends ModelWorkerInit {
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

type Thread = RpcWorker<ModelWorkerApi, Captioner['info']>;

/** Start the worker, wait for its captioner to load (rejects with the loader's error), and wrap it. */
export async function startWorkerCaptioner(opts: WorkerCaptionerOptions): Promise<WorkerCaptioner> {
  const entry = workerEntry(import.meta.url, 'worker');
  const init: ModelWorkerInit = { module: opts.module, factory: opts.factory, args: opts.args };
  const maxRestarts = opts.maxRestarts ?? 3;
  let disposed = false;
  let crashes = 0;
  const crashTimes: number[] = [];
  let broken: Error | null = null;
  let worker: Thread | null = null;
  let info!: Captioner['info'];
  // Settles once the current worker has loaded its captioner (a restart replaces it).
  let ready: Promise<void>;

  /** A fresh worker; resolves once its captioner is loaded. */
  const spawn = async (): Promise<void> => {
    disableOrtTelemetry(); // the worker's copy of the environment, and so its onnxruntime, inherits it
    const w: Thread = startWorker<ModelWorkerApi, Captioner['info']>({ entry, data: init, label: 'the model worker' });
    worker = w;
    let loaded = false;
    void w.exited.then((exit) => {
      if (worker === w) worker = null;
      if (exit.crash && loaded && !disposed) crashed(exit.crash.reason, exit.failed);
    });
    try {
      info = await w.ready;
      loaded = true;
    } catch (e) {
      if (worker === w) worker = null;
      if (disposed) throw new Error('the model was disposed while loading');
      if (e instanceof WorkerCrashedError)
        throw new ModelError(`the model worker stopped while loading the model (${e.reason})`);
      throw e;
    }
  };

  const crashed = (reason: string, failed: number) => {
    crashes++;
    const now = Date.now();
    crashTimes.push(now);
    while (crashTimes.length && crashTimes[0] < now - 60_000) crashTimes.shift();
    const restart = crashTimes.length <= maxRestarts;
    log.error(
      `serve: the model worker crashed (${reason}); ${failed} batch(es) in progress failed (answered 503); ` +
        (restart
          ? 'restarting it'
          : `${crashTimes.length} crashes within a minute: not restarting it; every caption request now fails with 503 until the server is restarted`),
    );
    if (!restart) {
      broken = new WorkerCrashedError(
        `the model worker crashed ${crashTimes.length} time(s) within a minute and is not restarted; the server must be restarted`,
        reason,
      );
      ready = Promise.resolve();
      return;
    }
    ready = spawn().then(
      () => log.info('serve: the model worker is back'),
      (err: unknown) => {
        broken = new WorkerCrashedError(
          `the model worker could not be restarted: ${(err as Error)?.message ?? String(err)}`,
          reason,
        );
        log.error(`serve: ${(broken as Error).message}`);
      },
    );
  };

  ready = spawn();
  try {
    await ready;
  } catch (e) {
    disposed = true;
    await (worker as Thread | null)?.terminate();
    throw e;
  }

  return {
    get info() {
      return info;
    },
    get crashes() {
      return crashes;
    },
    running: () => worker?.alive === true && !disposed,
    failure: () => (broken as Error | null)?.message ?? null,
    async captionBatch(inputs: ImageInput[], options: CaptionOptions = {}): Promise<CaptionOutcome[]> {
      if (disposed) throw new Error('captionBatch after dispose');
      // Wait for the worker to be loaded; a crash meanwhile starts another one (a new `ready`).
      for (let r = ready; ; r = ready) {
        await r;
        if (r === ready) break;
      }
      if (broken) throw broken;
      const w = worker as Thread | null;
      if (!w?.alive) throw new WorkerCrashedError('the model worker is not running', 'not running');
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
      try {
        return await w.call('caption', { inputs: wire, options: { ...options } }, [...transfer]);
      } catch (e) {
        if (e instanceof WorkerCrashedError && !disposed)
          throw new WorkerCrashedError(`the model worker crashed while captioning (${e.reason})`, e.reason);
        throw e;
      }
    },
    async dispose() {
      if (disposed) return;
      disposed = true;
      const w = worker as Thread | null;
      if (!w) return;
      // Let the captioner free what it holds (onnxruntime sessions), then end the thread in any case.
      if (w.alive) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          w.call('dispose').catch(() => {}),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, opts.disposeTimeoutMs ?? 5000))),
        ]);
        clearTimeout(timer);
      }
      await w.terminate(new WorkerCrashedError('the model was disposed while captioning', 'disposed'));
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
  const why =
    threads > 0
      ? `threads: ${threads}`
      : cores > 1
        ? 'every core but one, which is left for HTTP'
        : 'the only core, shared with HTTP';
  const line =
    `serve: the model runs in a worker thread: onnxruntime ${modelThreads} intra-op thread${modelThreads === 1 ? '' : 's'} (${why}); ` +
    `image decoding and tfjs run there between encoder runs; HTTP on the main thread; ${cores} core${cores === 1 ? '' : 's'}`;
  return { cores, modelThreads, line };
}

/**
 * The model of a run folder, loaded in a worker as `captioner serve` runs it (loadCaptioner there, with
 * `options`, which must be structured-cloneable: no weights in memory).
 */
export async function startModelWorker(
  runDir: string,
  config: Config,
  options: Omit<LoadCaptionerOptions, 'config' | 'threads' | 'vgg16Weights'> = {},
): Promise<WorkerCaptioner> {
  const split = threadSplit(config.threads);
  log.info(split.line);
  const loadOptions: LoadCaptionerOptions = { ...options, config, threads: split.modelThreads };
  // the loader of the build this module runs from (src/ under the tests, dist/ otherwise)
  const loader = workerEntry(import.meta.url, '../caption/load');
  return startWorkerCaptioner({ module: loader.href, factory: 'loadCaptioner', args: [runDir, loadOptions] });
}
