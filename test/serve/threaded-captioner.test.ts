// The model in a worker thread (src/serve/threaded-captioner.ts): the server's event loop stays free while
// the model's thread is blocked, crashes fail only the batches in progress, dispose and SIGTERM leave no
// thread behind. The fake (workers/blocking-captioner.mjs) busy-loops in the worker until the test opens
// a shared gate, so every assertion here is about order (what answered while the model was still
// blocked), never about wall-clock time. The worker runs src/serve/worker.ts (test/helpers/ts-hooks.mjs).
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ModelError } from '../../src/errors.js';
import { runServer } from '../../src/serve/run.js';
import { startServer, type RunningServer } from '../../src/serve/server.js';
import { startWorkerCaptioner, threadSplit, type WorkerCaptioner } from '../../src/serve/threaded-captioner.js';
import { BLUE, serveConfig, solid } from './fixtures.js';

process.env.CAPTIONER_QUIET = '1';

const FAKE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'workers', 'blocking-captioner.mjs');
const [GATE, STARTED, LOADS, DISPOSED] = [0, 1, 2, 3];

const open: { c: WorkerCaptioner; s?: RunningServer }[] = [];
afterEach(async () => {
  for (const { c, s } of open.splice(0)) {
    await s?.close({ timeoutMs: 200 });
    await c.dispose();
    expect(c.running()).toBe(false);
  }
});

async function fake(extra: Record<string, unknown> = {}, maxRestarts?: number) {
  const shared = new SharedArrayBuffer(16);
  const slots = new Int32Array(shared);
  const c = await startWorkerCaptioner({
    module: FAKE,
    factory: 'createBlockingCaptioner',
    args: [{ shared, ...extra }],
    maxRestarts,
  });
  open.push({ c });
  return { c, slots };
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !cond(); i++) await new Promise((r) => setTimeout(r, 2));
  expect(cond()).toBe(true);
}

/** Settles to [status, body]; `settled` says whether it has. */
function post(url: string, body: Buffer<ArrayBuffer>) {
  const state = { settled: false };
  const p = fetch(url + '/api/caption', { method: 'POST', body }).then(async (r) => {
    state.settled = true;
    return [r.status, (await r.json()) as Record<string, unknown>] as const;
  });
  return Object.assign(p, { state });
}

describe('WorkerCaptioner', () => {
  it("captions in the worker: the image bytes are transferred (the caller's buffer is detached), outcomes come back", async () => {
    const { c } = await fake({ blockMs: 1 });
    expect(c.info).toEqual({ name: 'blocking-fake', encoder: 'none', backend: 'busy loop' });
    const bytes = Buffer.alloc(20_000, 7);
    const out = await c.captionBatch(
      [
        { id: 'a', bytes },
        { id: 'b', bytes: Buffer.from('tiny') },
      ],
      { beam: 2 },
    );
    expect(out).toEqual([
      { ok: true, caption: 'a 20000 byte image', tokens: ['a', 'image'], logprob: -2 },
      { ok: true, caption: 'a 4 byte image', tokens: ['a', 'image'], logprob: -2 },
    ]);
    expect(bytes.buffer.byteLength).toBe(0); // moved, not copied
  });

  it('a loader error keeps its kind (ModelError, exit 4) and leaves no worker', async () => {
    const e = await startWorkerCaptioner({
      module: FAKE,
      factory: 'createBlockingCaptioner',
      args: [{ shared: new SharedArrayBuffer(16), failLoad: 'no such run: x' }],
    }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ModelError);
    expect((e as ModelError).exitCode).toBe(4);
    expect((e as Error).message).toBe('no such run: x');
    const e2 = await startWorkerCaptioner({ module: FAKE, factory: 'nope', args: [] }).catch((x: unknown) => x);
    expect((e2 as Error).message).toMatch(/has no export nope\(\)/);
  });

  it('dispose disposes the captioner in the worker and ends the thread', async () => {
    const { c, slots } = await fake({ blockMs: 1 });
    expect(c.running()).toBe(true);
    await c.dispose();
    expect(Atomics.load(slots, DISPOSED)).toBe(1);
    expect(c.running()).toBe(false);
    await expect(c.captionBatch([{ id: 'x', bytes: Buffer.from('x') }])).rejects.toThrow(/after dispose/);
  });

  it('says how threads are split: every core but one for onnxruntime unless threads is set', () => {
    expect(threadSplit(0, 8).modelThreads).toBe(7);
    expect(threadSplit(0, 1).modelThreads).toBe(1);
    expect(threadSplit(3, 8).modelThreads).toBe(3);
    expect(threadSplit(0, 2).line).toMatch(
      /worker thread: onnxruntime 1 intra-op thread \(every core but one, which is left for HTTP\).*HTTP on the main thread; 2 cores/,
    );
  });
});

describe('serve with the model in a worker', () => {
  async function serve(cfg = serveConfig(), maxRestarts?: number) {
    const f = await fake({}, maxRestarts);
    const s = await startServer(f.c, cfg);
    open[open.length - 1].s = s;
    return { ...f, s };
  }

  it('health answers while the model thread is blocked in a batch', async () => {
    const { s, slots } = await serve();
    const img = await solid(BLUE, 'png');
    const caption = post(s.url, img);
    await until(() => Atomics.load(slots, STARTED) === 1); // the worker is now spinning
    const health = await fetch(s.url + '/api/health');
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok', model: 'blocking-fake' });
    expect(caption.state.settled).toBe(false); // the batch is still running
    Atomics.store(slots, GATE, 1);
    expect(await caption).toEqual([200, expect.objectContaining({ caption: `a ${img.length} byte image` })]);
  });

  it('a full queue is refused with 503 while the model thread is blocked', async () => {
    const { s, slots } = await serve(serveConfig({ queueSize: 1, maxBatch: 1, batchWindowMs: 0 }));
    const img = await solid(BLUE, 'png');
    const first = post(s.url, img);
    await until(() => Atomics.load(slots, STARTED) === 1);
    const second = post(s.url, img);
    await until(() => s.stats().waiting === 1);
    const third = await post(s.url, img);
    expect(third[0]).toBe(503);
    expect(third[1].error).toMatch(/busy/);
    expect(Atomics.load(slots, STARTED)).toBe(1); // the first batch is still blocking the model
    expect(first.state.settled || second.state.settled).toBe(false);
    Atomics.store(slots, GATE, 1);
    expect((await first)[0]).toBe(200);
    expect((await second)[0]).toBe(200);
  });

  it('a worker crash fails the batch in progress with 503 and one log line, then the worker is restarted', async () => {
    const errors: string[] = [];
    const spy = vi
      .spyOn(process.stderr, 'write')
      .mockImplementation((chunk: string | Uint8Array) => (errors.push(String(chunk)), true));
    try {
      const { c, s, slots } = await serve();
      const img = await solid(BLUE, 'png');
      const doomed = post(s.url, img);
      await until(() => Atomics.load(slots, STARTED) === 1);
      Atomics.store(slots, GATE, 2); // the fake throws an uncaught error in the worker
      const [status, body] = await doomed;
      expect(status).toBe(503);
      expect(body.error).toMatch(/the model worker crashed while captioning \(fake native crash\); try again/);
      const again = post(s.url, img); // at once: waits for the fresh worker if it is still loading
      expect((await again)[0]).toBe(200);
      expect(Atomics.load(slots, LOADS)).toBe(2); // a fresh worker loaded the model again
      expect(errors.filter((l) => l.startsWith('error:'))).toEqual([
        expect.stringMatching(
          /^error: serve: the model worker crashed \(fake native crash\); 1 batch\(es\) in progress failed \(answered 503\); restarting it\n$/,
        ),
      ]);
      expect(c.crashes).toBe(1);
      expect(c.running()).toBe(true);
    } finally {
      spy.mockRestore();
    }
  });

  it('after more crashes than maxRestarts it is not restarted: requests get 503, health says error (503)', async () => {
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const { c, s, slots } = await serve(serveConfig(), 0);
      const img = await solid(BLUE, 'png');
      const doomed = post(s.url, img);
      await until(() => Atomics.load(slots, STARTED) === 1);
      Atomics.store(slots, GATE, 2);
      expect((await doomed)[0]).toBe(503);
      const [status, body] = await post(s.url, img);
      expect(status).toBe(503);
      expect(body.error).toMatch(/not restarted; the server must be restarted/);
      expect(c.running()).toBe(false);
      expect(Atomics.load(slots, LOADS)).toBe(1);
      const health = await fetch(s.url + '/api/health');
      expect(health.status).toBe(503);
      expect(await health.json()).toMatchObject({
        status: 'error',
        model: 'blocking-fake',
        error: expect.stringMatching(/crashed 1 time\(s\) within a minute/),
      });
    } finally {
      spy.mockRestore();
    }
  });

  it('a worker that cannot load the model again after a crash: requests get 503, health says why', async () => {
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const f = await fake({ failReload: 'the run folder is gone' });
      const s = await startServer(f.c, serveConfig());
      open[open.length - 1].s = s;
      const img = await solid(BLUE, 'png');
      const doomed = post(s.url, img);
      await until(() => Atomics.load(f.slots, STARTED) === 1);
      Atomics.store(f.slots, GATE, 2);
      expect((await doomed)[0]).toBe(503);
      const [status, body] = await post(s.url, img);
      expect(status).toBe(503);
      expect(body.error).toMatch(/could not be restarted: the run folder is gone/);
      expect(f.c.running()).toBe(false);
      expect(await (await fetch(s.url + '/api/health')).json()).toMatchObject({
        status: 'error',
        error: expect.stringMatching(/the run folder is gone/),
      });
    } finally {
      spy.mockRestore();
    }
  });

  it('SIGTERM stops accepting connections while the model is blocked, drains, and ends the worker', async () => {
    const shared = new SharedArrayBuffer(16);
    const slots = new Int32Array(shared);
    let captioner!: WorkerCaptioner;
    const load = async () =>
      (captioner = await startWorkerCaptioner({
        module: FAKE,
        factory: 'createBlockingCaptioner',
        args: [{ shared }],
      }));
    const signals = new EventEmitter();
    let server!: RunningServer;
    let stopped = false;
    let done!: Promise<void>;
    await new Promise<void>(
      (r) => (done = runServer(load, serveConfig(), { signals, onReady: (s) => ((server = s), r()) })),
    );
    void done.then(() => (stopped = true));
    const img = await solid(BLUE, 'png');
    const inflight = post(server.url, img);
    await until(() => Atomics.load(slots, STARTED) === 1);
    signals.emit('SIGTERM');
    const refused = await new Promise<string>((resolve) => {
      const sock = net.connect(server.port, '127.0.0.1');
      sock.once('connect', () => (sock.destroy(), resolve('connected')));
      sock.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    expect(refused).toBe('ECONNREFUSED');
    expect(inflight.state.settled).toBe(false);
    expect(stopped).toBe(false); // draining the request the model is still working on
    Atomics.store(slots, GATE, 1);
    expect((await inflight)[0]).toBe(200);
    await done;
    expect(Atomics.load(slots, DISPOSED)).toBe(1);
    expect(captioner.running()).toBe(false);
  });
});
