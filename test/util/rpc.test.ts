// The worker RPC layer (src/util/rpc.ts) with a fixture thread (./rpc/echo-worker.ts): answers find their
// requests whatever the order, buffers move both ways, a thread's user-fixable error comes back as its class
// with its message and exit code (others as WorkerError naming the worker), start-up failures, crashes and
// exits fail every pending request with a typed error instead of hanging, a ready timeout ends the thread,
// terminate is idempotent, and an idle worker never keeps the process alive (child processes). Every wait
// here is on an event (an answer, a rejection, the thread's exit), never on a clock.
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DataError, ModelError } from '../../src/errors.js';
import {
  startWorker,
  startWorkers,
  WorkerClosedError,
  WorkerCrashedError,
  WorkerError,
  workerEntry,
  WorkerStartTimeoutError,
} from '../../src/util/rpc.js';
import { repoRoot } from '../helpers/cli.js';
import type { EchoApi, EchoInit } from './rpc/echo-worker.js';

const entry = workerEntry(import.meta.url, 'rpc/echo-worker');
const start = (data: EchoInit = {}, more: { readyTimeoutMs?: number; label?: string } = {}) =>
  startWorker<EchoApi, { pid: number; start: string }>({ entry, data, label: more.label ?? 'echo worker', ...more });

describe('workerEntry', () => {
  it("is the entry beside the caller, in the caller's form (.ts from src/, .js from dist/), and says when it is missing", () => {
    expect(entry.pathname).toMatch(/\/test\/util\/rpc\/echo-worker\.ts$/);
    expect(workerEntry(pathToFileURL(path.join(repoRoot, 'src', 'decode', 'pool.ts')).href, 'worker').pathname).toBe(
      path.join(repoRoot, 'src', 'decode', 'worker.ts'),
    );
    expect(() => workerEntry(pathToFileURL(path.join(repoRoot, 'nowhere', 'pool.js')).href, 'worker')).toThrow(
      /worker thread entry .*nowhere\/worker\.js is missing \(rebuild: npm run build\)/,
    );
  });
});

describe('requests', () => {
  it('answers each request, in whatever order they finish; info comes with ready', async () => {
    const w = start();
    try {
      expect((await w.ready).start).toBe('ok');
      expect(w.alive).toBe(true);
      expect(await w.call('echo', { a: [1, 2], b: new Float32Array([0.5]) })).toEqual({
        a: [1, 2],
        b: new Float32Array([0.5]),
      });
      const first = w.call('wait', 'first');
      expect(w.inFlight).toBe(1);
      expect(await w.call('release')).toBe('released'); // answered while 'first' still waits
      expect(await first).toBe('first');
      expect(w.inFlight).toBe(0);
    } finally {
      await w.terminate();
    }
  });

  it('moves transferred buffers both ways instead of copying them', async () => {
    const w = start();
    try {
      await w.ready;
      const buffer = new ArrayBuffer(1000);
      const r = (await w.call('bytes', { buffer, n: 64 }, [buffer])) as { got: number; back: ArrayBuffer };
      expect(buffer.byteLength).toBe(0); // detached here: moved to the thread
      expect(r.got).toBe(1000);
      expect(new Uint8Array(r.back)).toEqual(new Uint8Array(64).fill(9));
    } finally {
      await w.terminate();
    }
  });
});

describe('errors', () => {
  it('a user-fixable error comes back as its class with its message and exit code; a subclass as its known base', async () => {
    const w = start();
    try {
      await w.ready;
      const model = await w.call('fail', 'model').catch((e: unknown) => e);
      expect(model).toBeInstanceOf(ModelError);
      expect(model).toMatchObject({ message: 'the checkpoint is corrupt', exitCode: 4 });
      const odd = await w.call('fail', 'odd').catch((e: unknown) => e);
      expect(odd).toBeInstanceOf(DataError);
      expect(odd).toMatchObject({ message: 'photo.jpg: truncated', exitCode: 3 });
      // the worker stays usable after a request's own error
      expect(await w.call('echo', 1)).toBe(1);
    } finally {
      await w.terminate();
    }
  });

  it('any other error is a WorkerError naming the worker, keeping the original name, message and stack', async () => {
    const w = start({}, { label: 'parallel decoding: worker 3' });
    try {
      await w.ready;
      const e = await w.call('fail', 'type').catch((x: unknown) => x);
      expect(e).toBeInstanceOf(WorkerError);
      expect(e).toMatchObject({
        message: "parallel decoding: worker 3 failed: TypeError: reading 'maxLength'",
        remoteName: 'TypeError',
        remoteMessage: "reading 'maxLength'",
      });
      expect((e as WorkerError).remoteStack).toMatch(/echo-worker/);
      const s = await w.call('fail', 'string').catch((x: unknown) => x);
      expect((s as Error).message).toBe('parallel decoding: worker 3 failed: Error: a string');
      await expect(w.call('nope' as 'echo')).rejects.toThrow(/no handler for 'nope'/);
    } finally {
      await w.terminate();
    }
  });
});

describe('start-up', () => {
  it("a start function's user error rejects ready with its class; the thread is gone and it is no crash", async () => {
    const w = start({ start: 'model-error' });
    const e = await w.ready.catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ModelError);
    expect(e).toMatchObject({ message: 'no such run: x', exitCode: 4 });
    const exit = await w.exited;
    expect(exit.crash).toBeUndefined();
    expect(w.alive).toBe(false);
    await expect(w.call('echo', 1)).rejects.toBe(e);
  });

  it('another start error names the worker', async () => {
    const w = start({ start: 'type-error' });
    await expect(w.ready).rejects.toThrow(/^echo worker failed to start: TypeError: cannot read x of undefined$/);
    await w.exited;
  });

  it('a thread that dies while starting rejects ready with a WorkerCrashedError', async () => {
    const w = start({ start: 'crash' });
    const e = await w.ready.catch((x: unknown) => x);
    expect(e).toBeInstanceOf(WorkerCrashedError);
    expect(e).toMatchObject({ message: 'echo worker stopped while starting (exit code 7)', reason: 'exit code 7' });
    expect((await w.exited).code).toBe(7);
  });

  it('a thread that is not ready within readyTimeoutMs is terminated and ready rejects', async () => {
    const w = start({ start: 'never' }, { readyTimeoutMs: 50 });
    await expect(w.ready).rejects.toBeInstanceOf(WorkerStartTimeoutError);
    await expect(w.ready).rejects.toThrow(/echo worker was not ready within 50 ms/);
    expect((await w.exited).crash).toBeUndefined();
  });

  it('startWorkers: one failing to start ends the others and rejects with its error', async () => {
    const p = startWorkers<EchoApi>([
      { entry, data: {}, label: 'a' },
      { entry, data: { start: 'model-error' } satisfies EchoInit, label: 'b' },
      { entry, data: { start: 'never' } satisfies EchoInit, label: 'c' },
    ]);
    await expect(p).rejects.toBeInstanceOf(ModelError);
  });

  it('startWorkers: an abort while they start ends them at once (one would never be ready) and rejects with the reason', async () => {
    const ac = new AbortController();
    const why = new Error('interrupted');
    const p = startWorkers<EchoApi>(
      [
        { entry, data: {}, label: 'a' },
        { entry, data: { start: 'never' } satisfies EchoInit, label: 'b' },
      ],
      { signal: ac.signal, reason: () => why },
    );
    ac.abort();
    await expect(p).rejects.toBe(why);
    await expect(
      startWorkers<EchoApi>([{ entry, data: {}, label: 'c' }], { signal: ac.signal, reason: () => why }),
    ).rejects.toBe(why); // aborted already: none starts
  });
});

describe('crashes', () => {
  it('an uncaught error in the thread fails every request in flight and every later call; no hang', async () => {
    const w = start({}, { label: 'parallel training: worker 1' });
    await w.ready;
    const waiting = w.call('wait', 'never answered');
    const crashing = w.call('crash', 'fake native crash');
    const [a, b] = await Promise.all([waiting.catch((e: unknown) => e), crashing.catch((e: unknown) => e)]);
    for (const e of [a, b]) {
      expect(e).toBeInstanceOf(WorkerCrashedError);
      expect(e).toMatchObject({
        message: 'parallel training: worker 1 crashed (fake native crash)',
        reason: 'fake native crash',
      });
    }
    const exit = await w.exited;
    expect(exit).toMatchObject({ failed: 2, crash: a });
    expect(w.alive).toBe(false);
    await expect(w.call('echo', 1)).rejects.toBe(a);
    await w.terminate(); // a no-op now
  });

  it('process.exit in the thread is a crash with its exit code', async () => {
    const w = start();
    await w.ready;
    await expect(w.call('exit', 5)).rejects.toMatchObject({ name: 'WorkerCrashedError', reason: 'exit code 5' });
    expect((await w.exited).code).toBe(5);
  });
});

describe('terminate', () => {
  it('is idempotent, waits for the exit, and fails requests in flight with the reason given (WorkerClosedError by default)', async () => {
    const w = start();
    await w.ready;
    const pending = w.call('wait', 'x').catch((x: unknown) => x);
    const t1 = w.terminate();
    const t2 = w.terminate(new Error('ignored: the first reason wins'));
    await Promise.all([t1, t2]);
    const e = await pending;
    expect(e).toBeInstanceOf(WorkerClosedError);
    expect((e as Error).message).toBe('echo worker was closed');
    expect(w.alive).toBe(false);
    expect(await w.exited).toMatchObject({ failed: 1 });
    expect((await w.exited).crash).toBeUndefined();
    await w.terminate();
    await expect(w.call('echo', 1)).rejects.toBe(e);

    const v = start();
    await v.ready;
    const mine = new Error('the pool was disposed');
    const p = v.call('wait', 'y').catch((x: unknown) => x);
    await v.terminate(mine);
    expect(await p).toBe(mine);
  });

  it('terminate while starting rejects ready with the reason', async () => {
    const w = start({ start: 'never' });
    const why = new Error('aborted');
    await w.terminate(why);
    await expect(w.ready).rejects.toBe(why);
  });
});

describe('the event loop', () => {
  /** Run test/util/rpc/idle-host.ts in a child process with the TypeScript hooks; its exit code and stdout. */
  function host(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const child = spawn(
      process.execPath,
      [
        '--import',
        path.join(repoRoot, 'test', 'helpers', 'register-ts.mjs'),
        path.join(repoRoot, 'test', 'util', 'rpc', 'idle-host.ts'),
        ...args,
      ],
      {
        cwd: repoRoot,
        env: { ...process.env, CAPTIONER_QUIET: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  }

  it('a request in flight keeps the process alive until its answer; an idle worker nobody terminated does not', async () => {
    const r = await host();
    expect(r.stderr).toBe('');
    expect(r).toMatchObject({ code: 0, stdout: 'answered\n' });
  });

  it('a decoding pool nobody disposed lets the process exit once idle (library callers)', async () => {
    const r = await host('pool');
    expect(r.stderr).toBe('');
    expect(r).toMatchObject({ code: 0, stdout: 'decoded 4\n' });
  });
});
