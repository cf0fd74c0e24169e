// caption with decode.workers 2 against decode.workers 1 (real tiny runs: ONNX encoder + merge or attention
// decoder, on wasm): the same lines in the same order and the same attention maps; the workers end with the
// run; Ctrl-C (abort) while the workers decode leaves a valid output and no worker. The workers run
// src/decode/worker.ts (test/helpers/ts-hooks.mjs).
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runCaption } from '../../src/caption/run.js';
import { ConfigSchema } from '../../src/config/schema.js';
import { tf } from '../../src/tf/tf.js';
import { imageFile, makeAttentionRun, makeRun } from './fixtures.js';
import type { WorkerHandle } from '../helpers/worker-threads.js';

// the worker threads started, and which of them still run
const threads = vi.hoisted(() => ({ started: 0, all: [] as WorkerHandle[], live: new Set<object>() }));
vi.mock('node:worker_threads', async (orig) =>
  (await import('../helpers/worker-threads.js')).trackWorkers(await orig(), threads),
);

let dir: string;
let images: string;
const N = 9;

beforeAll(async () => {
  process.env.CAPTIONER_QUIET = '1';
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-caption-workers-'));
  images = path.join(dir, 'images');
  for (let i = 0; i < N; i++) await imageFile(path.join(images, `p${i}.jpg`), 100 + i);
});

afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

/** batchSize 1: every decode batch holds one image whatever the timing, so the runs decode the same batches. */
const config = (workers: number) =>
  ConfigSchema.parse({ backend: 'wasm', threads: 1, decode: { workers, batchSize: 1, beam: 2, maxLength: 8 } });

async function captionWith(run: string, workers: number, maps?: string) {
  const out = path.join(dir, `out-${path.basename(path.dirname(run))}-${workers}.jsonl`);
  const before = tf.memory().numTensors;
  const started = threads.started;
  const s = await runCaption(config(workers), {
    inputs: [images],
    model: run,
    output: out,
    ...(maps ? { attentionMaps: maps } : {}),
  });
  expect(s).toMatchObject({ captioned: N, failed: 0, interrupted: false });
  expect(tf.memory().numTensors).toBe(before);
  expect(threads.started - started).toBe(workers > 1 ? workers : 0);
  expect(threads.live.size).toBe(0); // the run awaits the pool's dispose, which resolves once every thread has exited
  return (await fs.readFile(out, 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { image: string; caption: string; logprob: number; attention?: string });
}

describe('caption with decode.workers 2', () => {
  it('a merge run: the same lines, in the same order, as workers 1', async () => {
    const { run } = await makeRun(path.join(dir, 'merge'));
    const one = await captionWith(run, 1);
    const two = await captionWith(run, 2);
    expect(two).toEqual(one);
    expect(one.map((l) => path.basename(l.image))).toEqual(Array.from({ length: N }, (_, i) => `p${i}.jpg`));
  });

  it('an attention run: the same captions and byte-identical attention maps', async () => {
    const { run } = await makeAttentionRun(path.join(dir, 'att'));
    const m1 = path.join(dir, 'maps1');
    const m2 = path.join(dir, 'maps2');
    const one = await captionWith(run, 1, m1);
    const two = await captionWith(run, 2, m2);
    expect(two.map((l) => [l.image, l.caption, l.logprob])).toEqual(one.map((l) => [l.image, l.caption, l.logprob]));
    for (const [a, b] of one.map((l, i) => [l.attention!, two[i].attention!])) {
      expect(path.basename(b)).toBe(path.basename(a));
      expect(Buffer.compare(await fs.readFile(a), await fs.readFile(b))).toBe(0);
    }
  });

  it('an abort while the workers decode: interrupted, every line written is whole, no worker left', async () => {
    const { run } = await makeRun(path.join(dir, 'abort'));
    const controller = new AbortController();
    const stdout = new PassThrough();
    let text = '';
    stdout.on('data', (d) => {
      text += d;
      controller.abort(); // Ctrl-C as soon as the first line is out
    });
    const s = await runCaption(config(2), { inputs: [images], model: run, stdout, signal: controller.signal });
    expect(s.interrupted).toBe(true);
    const lines = text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { caption: string });
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.length).toBeLessThan(N);
    expect(threads.live.size).toBe(0);
  });
});
