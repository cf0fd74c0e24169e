// eval with decode.workers 2 against decode.workers 1 on tiny trained runs (merge and attention): the same
// predictions, in the same order, the same scores and the same attention rows in report.html; the workers
// end with the run and no tensor stays on the main thread. The workers run src/decode/worker.ts (test/helpers/ts-hooks.mjs).
import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConfigSchema, type Config } from '../../src/config/schema.js';
import { runEval } from '../../src/eval/run.js';
import { tf } from '../../src/tf/tf.js';
import { buildTrainedRun, imageName, type EvalFixture } from './run-fixture.js';
import type { WorkerHandle } from '../helpers/worker-threads.js';

// the worker threads started, and which of them still run
const threads = vi.hoisted(() => ({ started: 0, all: [] as WorkerHandle[], live: new Set<object>() }));
vi.mock('node:worker_threads', async (orig) =>
  (await import('../helpers/worker-threads.js')).trackWorkers(await orig(), threads),
);

let work: string;

beforeAll(async () => {
  process.env.CAPTIONER_QUIET = '1';
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-eval-workers-'));
});

afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

/** The fixture's config with decode.workers / batchSize and its own report folder. */
function withWorkers(fx: EvalFixture, workers: number, out: string): Config {
  return ConfigSchema.parse({
    ...fx.config,
    decode: { ...fx.config.decode, workers, batchSize: 1 },
    eval: { ...fx.config.eval, out },
  });
}

async function evalWith(fx: EvalFixture, workers: number) {
  const before = tf.memory().numTensors;
  const started = threads.started;
  const { report, files } = await runEval(withWorkers(fx, workers, path.join(fx.dir, `eval-w${workers}`)), {
    model: fx.model,
    noBaseline: true,
  });
  expect(tf.memory().numTensors).toBe(before);
  expect(threads.started - started).toBe(workers > 1 ? workers : 0);
  expect(threads.live.size).toBe(0); // eval awaits the pool's dispose, which resolves once every thread has exited
  const html = await fs.readFile(files.html, 'utf8');
  return {
    predictions: await fs.readFile(files.predictions, 'utf8'),
    results: await fs.readFile(files.results, 'utf8'),
    metrics: report.metrics,
    perImage: report.perImage,
    attention: [...html.matchAll(/data-attn="([^"]*)"/g)].map((m) => m[1]),
  };
}

describe('eval with decode.workers 2', () => {
  it('a merge run: the same predictions, results and scores as workers 1, in image order', async () => {
    const fx = await buildTrainedRun(path.join(work, 'merge'));
    const one = await evalWith(fx, 1);
    const two = await evalWith(fx, 2);
    expect(two.predictions).toBe(one.predictions);
    expect(two.results).toBe(one.results);
    expect(two.metrics).toEqual(one.metrics);
    expect(two.perImage).toEqual(one.perImage);
    expect(
      two.predictions
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).image),
    ).toEqual([12, 13, 14, 15].map(imageName));
  });

  it('an attention run: the same captions and the same attention rows', async () => {
    const fx = await buildTrainedRun(path.join(work, 'att'), { attention: true, epochs: 12 });
    const one = await evalWith(fx, 1);
    const two = await evalWith(fx, 2);
    expect(two.predictions).toBe(one.predictions);
    expect(one.attention.length).toBeGreaterThan(0);
    expect(two.attention).toEqual(one.attention);
  });
});
