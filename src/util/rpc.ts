// The one request/response layer between a host and its worker threads (the data-parallel trainer, the
// decoding pool, serve's model worker). It owns: where a thread entry lives (next to the calling module, in
// the form the caller runs: src/*.ts or dist/*.js), the ready handshake, request ids, transfer lists, how an
// error thrown in the thread comes back (a user-fixable error as its own class, with its message and exit
// code), crashes (a thread that dies fails every request in flight with a WorkerCrashedError and never
// leaves one pending), termination (idempotent; requests in flight fail with the reason given), and the
// event loop: an idle worker is unref'd, so a pool nobody disposed never keeps the process alive; a worker
// with a request in flight (or starting) keeps it alive until the answer comes.
//
// Host:   const w = startWorker<Api, Info>({ entry: workerEntry(import.meta.url, 'worker'), data, label });
//         const info = await w.ready; const r = await w.call('method', arg, [transfer]); await w.terminate();
// Thread: serveRequests<Api, Info>(async (data) => ({ api: { method: async (arg) => result }, info }));
//         a handler may return withTransfer(value, [buffers]) to move buffers back instead of copying them.
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parentPort, Worker, workerData, type Transferable } from 'node:worker_threads';
import { type CaptionerError, ConfigError, DataError, ModelError, PartialFailure, UsageError } from '../errors.js';

/** The methods a thread serves: each takes one structured-cloneable argument (any: each method names its own). */
export type WorkerApi = Record<string, (arg: any) => unknown>;

/** A handler's result whose `list` buffers are transferred to the host, not copied. */
export class Transfer<T> {
  constructor(
    readonly value: T,
    readonly list: readonly Transferable[],
  ) {}
}

/** Return this from a handler to move `list` (ArrayBuffers, ports) to the host with `value`. */
export function withTransfer<T>(value: T, list: readonly Transferable[]): Transfer<T> {
  return new Transfer(value, list);
}

type Unwrapped<R> = R extends Transfer<infer T> ? T : R;
/** What a call of method K resolves to on the host. */
export type ResultOf<A extends WorkerApi, K extends keyof A> = Unwrapped<Awaited<ReturnType<A[K]>>>;

/** An error as it crosses the thread boundary. */
interface WireError {
  name: string;
  message: string;
  /** The error's name, then its constructors' names from its class up (ImageError, DataError, CaptionerError, Error). */
  kinds: string[];
  stack?: string;
}

type ToThread = { rpc: 'call'; id: number; method: string; arg: unknown };
type FromThread =
  | { rpc: 'ready'; info: unknown }
  | { rpc: 'start-error'; error: WireError }
  | { rpc: 'result'; id: number; value: unknown }
  | { rpc: 'error'; id: number; error: WireError };

/** A worker thread died (uncaught error, out of memory, process.exit, terminated by someone else) without being asked to. */
export class WorkerCrashedError extends Error {
  constructor(
    message: string,
    /** What killed it: the uncaught error's message, or `exit code N`. */
    readonly reason: string,
  ) {
    super(message);
    this.name = 'WorkerCrashedError';
  }
}

/** A request could not be answered because the worker was terminated (terminate() without a reason of its own). */
export class WorkerClosedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WorkerClosedError';
  }
}

/** A worker did not report ready within readyTimeoutMs. */
export class WorkerStartTimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WorkerStartTimeoutError';
  }
}

/** A thread's error that is not a user-fixable kind: the original name, message and stack are kept. */
export class WorkerError extends Error {
  constructor(
    message: string,
    readonly remoteName: string,
    readonly remoteMessage: string,
    readonly remoteStack?: string,
  ) {
    super(message);
    this.name = 'WorkerError';
  }
}

/** User-fixable errors rebuilt as their own class on the host (a subclass comes back as the nearest of these). */
const USER_ERRORS: Record<string, new (message: string) => CaptionerError> = {
  UsageError,
  ConfigError,
  DataError,
  ModelError,
  PartialFailure,
};

function toWire(e: unknown): WireError {
  if (!(e instanceof Error)) return { name: 'Error', message: String(e), kinds: [] };
  const kinds: string[] = [e.name]; // a module that cannot import ours may still say ModelError by name
  for (let p = Object.getPrototypeOf(e); p && p !== Object.prototype; p = Object.getPrototypeOf(p))
    kinds.push(p.constructor.name);
  return { name: e.name, message: e.message, kinds, stack: e.stack };
}

/** The host's copy of a thread's error: a user-fixable kind keeps its class (and exit code), others become WorkerError. */
function fromWire(w: WireError, label: string, doing: string): Error {
  for (const k of w.kinds) {
    const K = USER_ERRORS[k];
    if (K) return new K(w.message);
  }
  return new WorkerError(`${label} ${doing}: ${w.name}: ${w.message}`, w.name, w.message, w.stack);
}

/**
 * The thread entry `name` (or a module a thread will import), relative to the calling module and in the
 * caller's own form: `workerEntry(import.meta.url, 'worker')` from dist/decode/pool.js is dist/decode/worker.js,
 * from src/decode/pool.ts (tests, which give worker threads a TypeScript loader) src/decode/worker.ts. So a
 * thread always runs the code its host runs.
 */
export function workerEntry(callerUrl: string, name: string): URL {
  const ext = path.extname(fileURLToPath(callerUrl));
  const url = new URL(`${name}${ext}`, callerUrl);
  if (!existsSync(url))
    throw new Error(
      `worker thread entry ${fileURLToPath(url)} is missing${ext === '.js' ? ' (rebuild: npm run build)' : ''}`,
    );
  return url;
}

export interface StartWorkerOptions<D> {
  /** The thread entry (workerEntry); it calls serveRequests. */
  entry: URL;
  /** Given to the thread's start function (structured-cloned; a SharedArrayBuffer stays shared). */
  data: D;
  /** Buffers in `data` to move instead of copy. */
  transfer?: readonly Transferable[];
  /** Names the worker in errors: 'parallel decoding: worker 1' crashed (exit code 1). */
  label: string;
  /** Fail start-up (WorkerStartTimeoutError, the thread terminated) if it is not ready within this many ms (default: no limit). */
  readyTimeoutMs?: number;
}

/** How a worker thread ended. */
export interface WorkerExit {
  /** The thread's exit code (1 when terminated). */
  code: number;
  /** Set when it died without being asked to (the error its requests failed with). */
  crash?: WorkerCrashedError;
  /** Requests that were in flight when it ended (they failed with `crash` or the termination's reason). */
  failed: number;
}

/** Start a worker thread that serves the requests of A; `ready` settles once it has started. */
export function startWorker<A extends WorkerApi, Info = undefined>(o: StartWorkerOptions<unknown>): RpcWorker<A, Info> {
  return new RpcWorker<A, Info>(o);
}

/** The host's handle on one worker thread. */
export class RpcWorker<A extends WorkerApi, Info = undefined> {
  /** Settles with the thread's info once its start function has returned; rejects when start-up fails (the thread is then gone). */
  readonly ready: Promise<Info>;
  /** Settles (never rejects) once the thread has exited, whoever ended it. */
  readonly exited: Promise<WorkerExit>;
  readonly label: string;
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: (v: never) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private started = false;
  private closing: Error | undefined;
  private dead: Error | undefined;
  private exitCode: number | undefined;
  private settleReady!: { resolve: (info: Info) => void; reject: (e: Error) => void };
  private readonly terminated: Promise<void>;
  private lastError = '';
  private failedByClose = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(o: StartWorkerOptions<unknown>) {
    this.label = o.label;
    this.ready = new Promise<Info>((resolve, reject) => (this.settleReady = { resolve, reject }));
    this.ready.catch(() => {}); // the host awaits it; an abandoned start must not be an unhandled rejection
    this.worker = new Worker(o.entry, { workerData: o.data, transferList: o.transfer ? [...o.transfer] : undefined });
    let onExit!: (e: WorkerExit) => void;
    this.exited = new Promise<WorkerExit>((r) => (onExit = r));
    this.terminated = this.exited.then(() => undefined);
    this.worker.on('message', (msg: FromThread) => this.onMessage(msg));
    this.worker.on(
      'error',
      (e: Error) => (this.lastError = `${e.name && e.name !== 'Error' ? `${e.name}: ` : ''}${e.message}`),
    );
    // an answer that cannot be read leaves its request without one: end the thread, a crash like any other
    this.worker.on('messageerror', (e: Error) => {
      this.lastError ||= `a message from the thread could not be read: ${e.message}`;
      void this.worker.terminate();
    });
    this.worker.on('exit', (code) => {
      this.exitCode = code;
      if (this.timer) clearTimeout(this.timer);
      let crash: WorkerCrashedError | undefined;
      const failed = this.pending.size + this.failedByClose;
      if (!this.closing) {
        const reason = this.lastError || `exit code ${code}`;
        crash = new WorkerCrashedError(
          `${this.label} ${this.started ? 'crashed' : 'stopped while starting'} (${reason})`,
          reason,
        );
      }
      this.fail(this.closing ?? crash!);
      onExit({ code, failed, ...(crash ? { crash } : {}) });
    });
    if (o.readyTimeoutMs !== undefined) {
      this.timer = setTimeout(() => {
        if (!this.started)
          void this.terminate(new WorkerStartTimeoutError(`${this.label} was not ready within ${o.readyTimeoutMs} ms`));
      }, o.readyTimeoutMs);
      this.timer.unref();
    }
  }

  /** Whether the thread has started and not exited or been asked to close. */
  get alive(): boolean {
    return this.started && !this.closing && this.exitCode === undefined;
  }

  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Call `method` in the thread with `arg` (its `transfer` buffers moved, not copied). Only after `ready`. */
  call<K extends keyof A & string>(
    method: K,
    arg?: Parameters<A[K]>[0],
    transfer: readonly Transferable[] = [],
  ): Promise<ResultOf<A, K>> {
    if (this.dead) return Promise.reject(this.dead);
    if (!this.started) return Promise.reject(new Error(`${this.label}: call('${method}') before the worker is ready`));
    const id = this.nextId++;
    return new Promise<ResultOf<A, K>>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: never) => void, reject });
      try {
        this.worker.postMessage({ rpc: 'call', id, method, arg } satisfies ToThread, [...transfer]);
      } catch (e) {
        this.pending.delete(id);
        reject(e as Error);
      }
      this.updateRef();
    });
  }

  /**
   * End the thread (idempotent): requests in flight, a start-up in progress and later calls fail with
   * `reason` (default WorkerClosedError). Resolves once the thread has exited.
   */
  async terminate(reason?: Error): Promise<void> {
    if (!this.closing && this.exitCode === undefined) {
      this.closing = reason ?? new WorkerClosedError(`${this.label} was closed`);
      this.failedByClose = this.pending.size;
      this.fail(this.closing);
      await this.worker.terminate();
    }
    await this.terminated;
  }

  private onMessage(msg: FromThread): void {
    switch (msg.rpc) {
      case 'ready':
        if (this.closing || this.dead) return;
        this.started = true;
        if (this.timer) clearTimeout(this.timer);
        this.settleReady.resolve(msg.info as Info);
        this.updateRef();
        return;
      case 'start-error': {
        const e = fromWire(msg.error, this.label, 'failed to start');
        this.closing ??= e; // its exit is not a crash
        this.fail(e);
        void this.worker.terminate();
        return;
      }
      case 'result':
      case 'error': {
        const p = this.pending.get(msg.id);
        if (!p) return;
        this.pending.delete(msg.id);
        if (msg.rpc === 'result') p.resolve(msg.value as never);
        else p.reject(fromWire(msg.error, this.label, 'failed'));
        this.updateRef();
      }
    }
  }

  /** Reject start-up, every request in flight and every later call with e (the first reason wins). */
  private fail(e: Error): void {
    if (!this.dead) this.dead = e;
    this.settleReady.reject(this.dead);
    for (const p of this.pending.values()) p.reject(this.dead);
    this.pending.clear();
  }

  /** Keep the process alive while starting or while a request is in flight; an idle worker does not. */
  private updateRef(): void {
    if (this.exitCode !== undefined) return;
    if (!this.started || this.pending.size > 0) this.worker.ref();
    else this.worker.unref();
  }
}

/**
 * Start several workers; if any fails to start, or `abort.signal` aborts meanwhile (at once, however long
 * start-up takes), all are terminated and the first failure (or `abort.reason()`) is thrown.
 */
export async function startWorkers<A extends WorkerApi, Info = undefined>(
  list: StartWorkerOptions<unknown>[],
  abort?: { signal?: AbortSignal; reason: () => Error },
): Promise<RpcWorker<A, Info>[]> {
  const signal = abort?.signal;
  if (signal?.aborted) throw abort!.reason();
  const workers = list.map((o) => startWorker<A, Info>(o));
  const onAbort = () => workers.forEach((w) => void w.terminate(abort!.reason()));
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await Promise.all(workers.map((w) => w.ready));
  } catch (e) {
    await Promise.all(workers.map((w) => w.terminate(e as Error)));
    throw e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  return workers;
}

/** Start function of a thread entry: builds what the handlers need from the host's data. */
export type StartThread<A extends WorkerApi, Info> = (
  data: never,
) => Promise<{ api: A; info?: Info }> | { api: A; info?: Info };

/**
 * The thread side: run `start(workerData)`, report ready (or its error), then answer each request with its
 * handler's result or error. Requests are handled as they arrive (hosts send one at a time where order matters).
 */
export function serveRequests<A extends WorkerApi, Info = undefined>(start: StartThread<A, Info>): void {
  const port = parentPort;
  if (!port) throw new Error('serveRequests: not running in a worker thread');
  let api: A | undefined;
  // a request that cannot be read would never be answered: die, so the host fails it as a crash
  port.on('messageerror', (e: Error) => {
    throw new Error(`a request could not be read: ${e.message}`);
  });
  port.on('message', (msg: ToThread) => {
    if (msg?.rpc !== 'call') return;
    void (async () => {
      try {
        const handler = api?.[msg.method];
        if (typeof handler !== 'function') throw new Error(`no handler for '${msg.method}'`);
        const out = await handler(msg.arg);
        if (out instanceof Transfer)
          port.postMessage({ rpc: 'result', id: msg.id, value: out.value } satisfies FromThread, [...out.list]);
        else port.postMessage({ rpc: 'result', id: msg.id, value: out } satisfies FromThread);
      } catch (e) {
        port.postMessage({ rpc: 'error', id: msg.id, error: toWire(e) } satisfies FromThread);
      }
    })();
  });
  void (async () => {
    try {
      const r = await start(workerData as never);
      api = r.api;
      port.postMessage({ rpc: 'ready', info: r.info } satisfies FromThread);
    } catch (e) {
      port.postMessage({ rpc: 'start-error', error: toWire(e) } satisfies FromThread);
    }
  })();
}
