// The real model (a tiny ONNX encoder + a small random decoder, test/caption/fixtures.ts) run in the
// serve worker: the same captions as loadCaptioner on this thread, and `captioner serve` (the built CLI)
// serving through it, logging the thread split, and exiting 0 on SIGTERM. The CLI needs the build (dist/); the
// in-process worker runs src/ (test/helpers/ts-hooks.mjs).
import { spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCaptioner } from '../../src/caption/load.js';
import { ConfigSchema } from '../../src/config/schema.js';
import { startModelWorker } from '../../src/serve/threaded-captioner.js';
import { imageFile, makeRun } from '../caption/fixtures.js';
import { bin, repoRoot } from '../helpers/cli.js';

process.env.CAPTIONER_QUIET = '1';

let tmp: string;
let run: string;
let images: Buffer[];

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'serve-worker-'));
  ({ run } = await makeRun(path.join(tmp, 'm')));
  images = [];
  for (const seed of [1, 2, 3]) {
    const f = path.join(tmp, `img${seed}.jpg`);
    await imageFile(f, seed);
    images.push(await fs.readFile(f));
  }
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

describe('the real captioner in the serve worker', () => {
  it('gives the same outcomes as loadCaptioner on this thread', async () => {
    const config = ConfigSchema.parse({ threads: 1 });
    const here = await loadCaptioner(run, { config });
    const inputs = () => [
      ...images.map((b, i) => ({ id: `i${i}`, bytes: Buffer.from(b) })),
      { id: 'bad', bytes: Buffer.from('not an image at all') },
    ];
    let expected;
    try {
      expected = await here.captionBatch(inputs(), { beam: 2 });
    } finally {
      await here.dispose();
    }
    const worker = await startModelWorker(run, config);
    try {
      expect(worker.info).toEqual(here.info);
      expect(await worker.captionBatch(inputs(), { beam: 2 })).toEqual(expected);
    } finally {
      await worker.dispose();
    }
    expect(worker.running()).toBe(false);
  });

  // onnxruntime's telemetry must be off in every thread that runs it: the worker's process.env is a copy that
  // onnxruntime's native code never reads, so the switch has to be in the real environment before the worker
  // starts. Run with its own HOME and TMPDIR and no ORT_DISABLE_TELEMETRY: no telemetry files afterwards.
  it('`captioner serve` answers through the worker, logs the thread split, exits 0 on SIGTERM, leaves no onnxruntime telemetry', async () => {
    const home = path.join(tmp, 'home');
    const tmpdir = path.join(tmp, 'tmpdir');
    await fs.mkdir(home);
    await fs.mkdir(tmpdir);
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, TMPDIR: tmpdir, CAPTIONER_QUIET: '0' };
    delete env.ORT_DISABLE_TELEMETRY;
    const child = spawn(process.execPath, [bin, 'serve', '--model', run, '--port', '0', '--set', 'threads=1'], {
      cwd: repoRoot,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        child.stderr.on('data', () => {
          const m = /ready .*: open (http:\/\/\S+)/.exec(stderr);
          if (m) resolve(m[1]);
        });
        void exited.then(() => reject(new Error(`serve exited early:\n${stderr}`)));
      });
      expect(stderr).toMatch(/serve: the model runs in a worker thread: onnxruntime 1 intra-op thread \(threads: 1\)/);
      const res = await fetch(url + '/api/caption', { method: 'POST', body: new Uint8Array(images[0]) });
      expect(res.status).toBe(200);
      expect(typeof ((await res.json()) as { caption: unknown }).caption).toBe('string');
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(stderr).toMatch(/serve: stopped/);
      expect(stderr).not.toMatch(/\n\s+at /);
    } finally {
      child.kill('SIGKILL');
    }
    expect(existsSync(path.join(home, '.cache', 'Microsoft'))).toBe(false);
    expect((await fs.readdir(tmpdir)).filter((n) => n.startsWith('mat-debug'))).toEqual([]);
    expect(existsSync(`/tmp/mat-debug-${child.pid}.log`)).toBe(false);
  });
});
