// train.workers > 1 through the real train() and CLI: a data-parallel run completes and writes a run folder
// that caption/eval load, its --resume is byte-identical to an uninterrupted run, workers 1 and 2 agree to
// float tolerance, changing workers on --resume is logged, a diverging run saves no NaN weights, and Ctrl-C
// saves, exits 130 and leaves no worker. The in-process workers run src/train/parallel/worker.ts
// (test/helpers/ts-hooks.mjs); the CLI test runs the build (dist/).
import { describe, it, expect, beforeAll, vi } from 'vitest';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { tf } from '../../src/tf/tf.js';
import { ConfigSchema, type Config } from '../../src/config/schema.js';
import { engineNotes, train, type FeatureInfo, type TrainOptions } from '../../src/train/run.js';
import { loadDecoder, loadTrainedModel } from '../../src/model/runfolder.js';
import { greedyDecode } from '../helpers/greedy.js';
import { bin, repoRoot } from '../helpers/cli.js';
import { writeFixture } from './cli-fixture.js';
import { synthetic } from './synthetic.js';
import { ModelError } from '../../src/errors.js';
import type { WorkerHandle } from '../helpers/worker-threads.js';

// count the worker threads the trainer starts, and which of them are still running
const threads = vi.hoisted(() => ({ started: 0, all: [] as WorkerHandle[], live: new Set<object>() }));
vi.mock('node:worker_threads', async (orig) =>
  (await import('../helpers/worker-threads.js')).trackWorkers(await orig(), threads),
);

beforeAll(async () => {
  await tf.setBackend('cpu');
  process.env.CAPTIONER_QUIET = '1';
});

/**
 * A config that makes training diverge at once: a learning rate and clip norm far past the schema's bounds,
 * set after validation on purpose (a legal setting can diverge too, and the guard must hold whatever the
 * optimizer does).
 */
function diverging(c: Config): Config {
  return { ...c, train: { ...c.train, learningRate: 1e30, clipNorm: 1e30 } };
}

function cfg(over: Record<string, unknown> = {}, model: Record<string, unknown> = {}): Config {
  return ConfigSchema.parse({
    model: { embedDim: 8, units: 12, imageUnits: 12, hiddenUnits: 12, dropout: 0.1, ...model },
    train: { epochs: 2, batchSize: 8, learningRate: 0.01, patience: 0, seed: 7, workers: 2, ...over },
  });
}

const info: FeatureInfo = {
  dir: '/synthetic/features',
  fingerprint: 'c'.repeat(64),
  encoder: { name: 'vgg16', layer: 'fc2' },
  shape: [12],
  dtype: 'float32',
};
const tmp = () => fs.mkdtemp(path.join(os.tmpdir(), 'captioner-workers-'));

/** train() returns after its trainer's dispose, which resolves once every worker thread has exited. */
function run(out: string, config: Config, more: Partial<TrainOptions> = {}) {
  const s = synthetic({ train: 16, val: 8 });
  return train({ config, prepared: s.prepared, features: s.features, featureInfo: info, out, backend: 'cpu', ...more });
}

async function captureStderr<T>(fn: () => Promise<T>): Promise<{ value: T; text: string }> {
  const orig = process.stderr.write.bind(process.stderr);
  let text = '';
  const quiet = process.env.CAPTIONER_QUIET;
  delete process.env.CAPTIONER_QUIET;
  process.stderr.write = ((c: string | Uint8Array) => ((text += String(c)), true)) as typeof process.stderr.write;
  try {
    return { value: await fn(), text };
  } finally {
    process.stderr.write = orig;
    process.env.CAPTIONER_QUIET = quiet;
  }
}

describe('train.workers', () => {
  it('defaults to 1 and refuses 0, a fraction and other words', () => {
    expect(ConfigSchema.parse({}).train.workers).toBe(1);
    expect(ConfigSchema.parse({ train: { workers: 'auto' } }).train.workers).toBe('auto');
    for (const bad of [0, 1.5, 'all', -2])
      expect(ConfigSchema.safeParse({ train: { workers: bad } }).success).toBe(false);
    expect(ConfigSchema.safeParse({ train: { workers: 'all' } }).error?.issues[0].message).toBe(
      'expected "auto" or an integer from 1 to 256, got "all"',
    );
  });

  it('the log suggests train.workers only on wasm without the addon, with no speed figure', () => {
    const base = {
      workers: 1,
      asked: 1 as const,
      backend: 'wasm (tfjs-backend-wasm 4.22.0)',
      native: false,
      cores: 4,
      blasThreads: 4,
    };
    const plain = engineNotes(base).info.join('\n');
    expect(plain).toMatch(/train\.workers auto splits each batch over 4 worker threads/);
    expect(plain).not.toMatch(/\d(\.\d+)?x/); // figures measured once on one machine do not belong in a log line
    expect(engineNotes({ ...base, native: true }).info.join('\n')).not.toMatch(/train\.workers/);
    expect(engineNotes({ ...base, backend: 'cpu (plain JavaScript)' }).info).toEqual([]);
    expect(engineNotes({ ...base, cores: 1 }).info).toEqual([]);
    const many = engineNotes({ ...base, workers: 8, asked: 8, backend: 'tensorflow (tfjs-node-gpu)', native: true });
    expect(many.info[0]).toMatch(/8 worker threads x 1 wasm thread each .*matrix products on 1 OpenBLAS thread/);
    expect(many.warn).toHaveLength(2);
  });

  it('a workers-2 run completes, writes a run folder caption/eval load, and resumes byte-identically', async () => {
    const before = tf.memory().numTensors;
    const started = threads.started;
    const a = await tmp();
    const b = await tmp();
    const c = cfg({ epochs: 3 });
    const { value: full, text } = await captureStderr(() => run(a, c));
    expect(full.status).toBe('completed');
    expect(threads.started - started).toBe(2);
    expect(text).toMatch(/train: 2 worker threads x 1 wasm thread each/);
    const part = await run(
      b,
      c,
      (() => {
        const ctl = new AbortController();
        return { signal: ctl.signal, onStep: (k: number) => k >= 3 && ctl.abort() };
      })(),
    );
    expect(part).toMatchObject({ status: 'interrupted', steps: 3 });
    expect(threads.live.size).toBe(0);
    const { value: done, text: resumed } = await captureStderr(() => run(b, c, { resume: true }));
    expect(done).toMatchObject({ status: 'completed', epochs: 3, steps: full.steps });
    expect(resumed).not.toMatch(/not byte-identical/);
    for (const f of ['last/weights.bin', 'last/optimizer.bin', 'best/weights.bin']) {
      expect(Buffer.compare(await fs.readFile(path.join(a, f)), await fs.readFile(path.join(b, f))), f).toBe(0);
    }
    expect(JSON.parse(await fs.readFile(path.join(a, 'last', 'state.json'), 'utf8')).workers).toBe(2);
    // the model caption and eval load, and it decodes
    const m = await loadTrainedModel(a);
    try {
      const s = synthetic({ train: 16, val: 8 });
      const seqs = await greedyDecode(
        m.decoder,
        s.prepared.splits.val.map((v) => s.features.get(v.image)),
        { start: 2, end: 3, maxLength: 8 },
      );
      expect(seqs).toHaveLength(8);
    } finally {
      m.decoder.dispose();
    }
    expect(threads.live.size).toBe(0);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('workers 1 and 2 give the same weights to float tolerance (dropout 0)', async () => {
    const one = await tmp();
    const two = await tmp();
    await run(one, cfg({ epochs: 1, workers: 1 }, { dropout: 0 }));
    await run(two, cfg({ epochs: 1, workers: 2 }, { dropout: 0 }));
    const w1 = await loadDecoder(path.join(one, 'last'));
    const w2 = await loadDecoder(path.join(two, 'last'));
    try {
      const a = await w1.readWeights();
      const b = await w2.readWeights();
      expect(Object.keys(b).sort()).toEqual(Object.keys(a).sort());
      let diff = 0;
      let moved = 0;
      for (const [n, x] of Object.entries(a)) {
        const y = b[n] as Float32Array;
        for (let i = 0; i < x.length; i++) diff = Math.max(diff, Math.abs(x[i] - y[i]));
        moved += x.length;
      }
      expect(moved).toBeGreaterThan(0);
      expect(diff).toBeLessThan(1e-4);
    } finally {
      w1.dispose();
      w2.dispose();
    }
  });

  it('a --resume on another number of workers continues and says it is not byte-identical', async () => {
    const out = await tmp();
    const ctl = new AbortController();
    await run(out, cfg({ epochs: 2, workers: 2 }), { signal: ctl.signal, onStep: (k) => k >= 2 && ctl.abort() });
    const { value, text } = await captureStderr(() => run(out, cfg({ epochs: 2, workers: 1 }), { resume: true }));
    expect(value).toMatchObject({ status: 'completed', epochs: 2 });
    expect(text).toMatch(/resume: train\.workers 2 -> 1, applied from step 3/);
    expect(text).toMatch(/trained on 2 workers, this run uses 1: .* not byte-identical/);
    const manifest = JSON.parse(await fs.readFile(path.join(out, 'manifest.json'), 'utf8'));
    expect(manifest.changes).toEqual([{ key: 'train.workers', from: 2, to: 1, epoch: 1, step: 2 }]);
    expect(threads.live.size).toBe(0);
  });

  it('an attention model on a grid cache trains on 2 workers', async () => {
    const s = synthetic({ dim: 16, train: 16, val: 8 });
    const out = await tmp();
    const config = ConfigSchema.parse({
      model: {
        type: 'attention',
        embedDim: 8,
        units: 12,
        hiddenUnits: 12,
        dropout: 0.1,
        attention: { attentionDim: 8 },
      },
      train: { epochs: 2, batchSize: 8, learningRate: 0.01, patience: 0, seed: 7, workers: 2 },
    });
    const grid: FeatureInfo = {
      dir: '/synthetic/grid',
      fingerprint: 'g'.repeat(64),
      encoder: { name: 'vgg16', layer: 'block5_pool' },
      shape: [2, 2, 4],
      dtype: 'float32',
    };
    const res = await train({
      config,
      prepared: s.prepared,
      features: s.features,
      featureInfo: grid,
      out,
      backend: 'cpu',
    });
    expect(res.status).toBe('completed');
    expect(res.history.every((h) => Number.isFinite(h.trainLoss) && Number.isFinite(h.valLoss))).toBe(true);
    const m = await loadTrainedModel(out);
    expect(m.decoder.type).toBe('attention');
    m.decoder.dispose();
    expect(threads.live.size).toBe(0);
  });

  it('a diverging workers-2 run stops with a ModelError, saves no NaN weights and leaves no worker', async () => {
    const out = await tmp();
    const e = await run(out, diverging(cfg({ epochs: 3 }))).catch((x) => x);
    expect(e).toBeInstanceOf(ModelError);
    expect(e.message).toMatch(/loss became (NaN|Infinity)/);
    for (const which of ['best', 'last']) {
      const dir = path.join(out, which);
      if (await fs.stat(dir).catch(() => null)) (await loadDecoder(dir)).dispose(); // throws on non-finite weights
    }
    expect(threads.live.size).toBe(0);
  });

  it('Ctrl-C during a workers-2 CLI run saves a checkpoint and exits 130', async () => {
    const dir = await tmp();
    await writeFixture(dir);
    const args = [
      'train',
      '--set',
      `workdir=${dir}`,
      '--backend',
      'cpu',
      '--set',
      'model={embedDim: 8, units: 12, imageUnits: 12, hiddenUnits: 12}',
      '--set',
      'train.batchSize=4',
      '--set',
      'train.workers=2',
      '--set',
      'train.patience=0',
      '--epochs',
      '10000',
    ];
    const child = spawn(process.execPath, [bin, ...args], {
      cwd: repoRoot,
      env: { ...process.env, CAPTIONER_QUIET: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const history = path.join(dir, 'model', 'history.jsonl');
    for (let i = 0; i < 600; i++) {
      if ((await fs.readFile(history, 'utf8').catch(() => '')).trim()) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    child.kill('SIGINT');
    // the process ends by itself: a worker thread left running would keep it alive
    expect(await exited).toBe(130);
    expect(stderr).toMatch(/interrupt: finishing the current step and saving a checkpoint/);
    const state = JSON.parse(await fs.readFile(path.join(dir, 'model', 'last', 'state.json'), 'utf8'));
    expect(state).toMatchObject({ kind: 'captioner.train-state', workers: 2 });
    expect(state.step).toBeGreaterThan(0);
  });
});
