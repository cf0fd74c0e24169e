// How a training run treats the user's folders and settings when things go wrong: other stages' folders
// refused, --resume setting changes applied or refused (never mis-recorded), a checkpoint swap killed
// half way recovered, a full disk reported in one line, no validation data said plainly, interrupts seen
// between steps and in the last epoch, non-finite weights refused.
import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { execFileSync } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { tf } from '../../src/tf/tf.js';
import { ConfigSchema, type Config } from '../../src/config/schema.js';
import { train, type FeatureInfo, type TrainOptions } from '../../src/train/run.js';
import { loadDecoder, loadTrainedModel } from '../../src/model/runfolder.js';
import { writePrepared, type PreparedManifest } from '../../src/prep/prepared.js';
import { openCacheWriter, type CacheSpec } from '../../src/features/cache.js';
import { DataError, ModelError, UsageError } from '../../src/errors.js';
import { synthetic } from './synthetic.js';

let work: string;
beforeAll(async () => {
  await tf.setBackend('cpu');
  process.env.CAPTIONER_QUIET = '1';
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-trainsafety-'));
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

let n = 0;
const fresh = () => path.join(work, `t${n++}`);

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
    train: { epochs: 2, batchSize: 8, learningRate: 0.01, patience: 0, seed: 7, ...over },
  });
}
const info = (): FeatureInfo => ({
  dir: '/synthetic/features',
  fingerprint: 'c'.repeat(64),
  encoder: { name: 'vgg16' },
  shape: [12],
  dtype: 'float32',
});

function run(out: string, o: Partial<TrainOptions> & { val?: number } = {}) {
  const s = synthetic({ train: 16, val: o.val ?? 8 });
  return train({
    config: cfg(),
    prepared: s.prepared,
    features: s.features,
    featureInfo: info(),
    out,
    backend: 'cpu',
    ...o,
  });
}

/** Stop a run after `steps` optimizer steps (as a Ctrl-C there would). */
function stopAt(steps: number): Pick<TrainOptions, 'signal' | 'onStep'> {
  const ctl = new AbortController();
  return { signal: ctl.signal, onStep: (k) => k >= steps && ctl.abort() };
}

async function captureStderr<T>(fn: () => Promise<T>): Promise<{ value: T; text: string }> {
  const orig = process.stderr.write.bind(process.stderr);
  let text = '';
  process.stderr.write = ((c: string | Uint8Array) => ((text += String(c)), true)) as typeof process.stderr.write;
  const quiet = process.env.CAPTIONER_QUIET;
  process.env.CAPTIONER_QUIET = '0';
  try {
    return { value: await fn(), text };
  } finally {
    process.stderr.write = orig;
    process.env.CAPTIONER_QUIET = quiet;
  }
}

async function listAll(dir: string): Promise<string[]> {
  return (await fs.readdir(dir, { recursive: true })).map(String).sort();
}

describe("train --out and other stages' folders", () => {
  it('refuses a prepared dataset, a feature cache or unrelated files, and leaves them untouched', async () => {
    const s = synthetic({ train: 4, val: 2 });
    const prepared = fresh();
    await writePrepared(prepared, {
      vocab: s.prepared.vocab,
      splits: s.prepared.splits,
      manifest: { kind: 'captioner.prepared', version: 1, name: 't', createdAt: 'now' } as unknown as Omit<
        PreparedManifest,
        'fingerprint' | 'files'
      >,
    });
    const features = fresh();
    const spec = {
      encoder: {
        name: 'syn',
        fingerprint: 'e',
        runtime: 'none',
        detail: '',
        weights: 'random',
        weightsFingerprint: 'w',
        layer: 'fc2',
        preprocessing: {},
        shape: [12],
      },
      dtype: 'float32',
    } as unknown as CacheSpec;
    const w = await openCacheWriter(features, spec, { chunkSize: 8 });
    await w.add('train_0000.jpg', s.features.get('train_0000.jpg'));
    await w.close();
    const photos = fresh();
    await fs.mkdir(photos);
    await fs.writeFile(path.join(photos, 'holiday.jpg'), 'x');
    for (const [dir, what] of [
      [prepared, /holds a prepared dataset, not a training run/],
      [features, /holds a feature cache/],
      [photos, /holds other files \(holiday\.jpg\)/],
    ] as const) {
      const before = await listAll(dir);
      const e = await run(dir).catch((x) => x);
      expect(e).toBeInstanceOf(UsageError);
      expect(e.message).toMatch(what);
      expect(e.message).toContain(dir);
      expect(await listAll(dir)).toEqual(before);
    }
    // and the other way round: prep and features refuse a run folder
    const model = fresh();
    await run(model, { config: cfg({ epochs: 1 }) });
    const e1 = await writePrepared(model, {
      vocab: s.prepared.vocab,
      splits: s.prepared.splits,
      manifest: {} as Omit<PreparedManifest, 'fingerprint' | 'files'>,
    }).catch((x) => x);
    expect(e1).toBeInstanceOf(UsageError);
    expect(e1.message).toMatch(/holds a training run \(model\), not a prepared dataset/);
    const e2 = await openCacheWriter(model, spec, { chunkSize: 8 }).catch((x) => x);
    expect(e2).toBeInstanceOf(UsageError);
    expect(e2.message).toMatch(/holds a training run \(model\), not a feature cache/);
    await expect(loadTrainedModel(model).then((m) => m.decoder.dispose())).resolves.toBeUndefined();
  });

  it('accepts an empty folder and the leftovers of its own interrupted first start', async () => {
    const out = fresh();
    await fs.mkdir(out);
    await fs.writeFile(path.join(out, 'vocab.json'), '{}');
    await fs.writeFile(path.join(out, `config.yaml.${process.pid}.9.tmp`), '');
    await expect(run(out, { config: cfg({ epochs: 1 }) })).resolves.toMatchObject({ status: 'completed' });
  });
});

describe('train --resume with changed settings', () => {
  it('applies, logs and records a new learning rate', async () => {
    const out = fresh();
    await run(out, { config: cfg({ epochs: 3 }), ...stopAt(3) });
    let savedRate: number | undefined;
    // the checkpoint already holds the new rate when the first step runs (a kill then must not lose it)
    const onStep = () =>
      (savedRate ??= JSON.parse(readFileSync(path.join(out, 'last', 'state.json'), 'utf8')).learningRate);
    const { value: done, text } = await captureStderr(() =>
      run(out, { config: cfg({ epochs: 3, learningRate: 0.1 }), resume: true, onStep }),
    );
    expect(savedRate).toBe(0.1);
    expect(done.status).toBe('completed');
    expect(text).toMatch(/resume: train\.learningRate 0\.01 -> 0\.1, applied from step 4/);
    // every epoch record shows the rate it actually ran with
    expect(done.history.map((h) => h.learningRate)).toEqual([0.1, 0.1, 0.1]);
    const manifest = JSON.parse(await fs.readFile(path.join(out, 'manifest.json'), 'utf8'));
    expect(manifest.changes).toEqual([{ key: 'train.learningRate', from: 0.01, to: 0.1, epoch: 1, step: 3 }]);
    expect(manifest.metrics.learningRate).toBe(0.1);
    expect(YAML.parse(await fs.readFile(path.join(out, 'config.yaml'), 'utf8')).train.learningRate).toBe(0.1);
    const state = JSON.parse(await fs.readFile(path.join(out, 'last', 'state.json'), 'utf8'));
    expect(state.learningRate).toBe(0.1);
  });

  it('refuses settings that define the run, and records nothing', async () => {
    const out = fresh();
    await run(out, { config: cfg({ epochs: 2 }), ...stopAt(2) });
    const before = await fs.readFile(path.join(out, 'config.yaml'), 'utf8');
    for (const [c, what] of [
      [cfg({ batchSize: 4 }), /train\.batchSize: 8 -> 4 cannot change during a run/],
      [cfg({ seed: 8 }), /train\.seed: 7 -> 8/],
      [cfg({}, { embedDim: 16 }), /model\.embedDim: 8 -> 16/],
      [cfg({}, { dropout: 0.3 }), /model\.dropout: 0\.1 -> 0\.3/],
    ] as const) {
      const e = await run(out, { config: c, resume: true }).catch((x) => x);
      expect(e).toBeInstanceOf(UsageError);
      expect(e.message).toMatch(what);
    }
    expect(await fs.readFile(path.join(out, 'config.yaml'), 'utf8')).toBe(before);
    await expect(run(out, { config: cfg({ epochs: 2 }), resume: true })).resolves.toMatchObject({
      status: 'completed',
    });
  });
});

describe('a checkpoint swap killed half way', () => {
  async function killedRun(): Promise<{ out: string; steps: number }> {
    const out = fresh();
    const r = await run(out, { config: cfg({ epochs: 3 }), ...stopAt(6) }); // 4 steps an epoch: best/ exists
    return { out, steps: r.steps };
  }

  it('resumes from the complete previous folder (.old) and deletes the partial one (.tmp)', async () => {
    const reference = fresh();
    await run(reference, { config: cfg({ epochs: 3 }) });
    const { out } = await killedRun();
    // state on disk after a kill between "last -> last.old-*" and "last.new-* -> last", with a partial write
    await fs.rename(path.join(out, 'last'), path.join(out, 'last.old-4242-7'));
    await fs.mkdir(path.join(out, 'last.tmp-4242-6'));
    await fs.writeFile(path.join(out, 'last.tmp-4242-6', 'weights.json'), '{"form');
    await fs.rename(path.join(out, 'best'), path.join(out, 'best.old-4242-3'));
    // a plain start puts the checkpoint back, and is then refused: the run is there
    const { value: plain, text } = await captureStderr(() => run(out, { config: cfg({ epochs: 3 }) }).catch((x) => x));
    expect(plain.message).toMatch(/already holds a training run/);
    expect(text).toMatch(/last: restored from last\.old-4242-7/);
    expect(text).toMatch(/best: restored from best\.old-4242-3/);
    const done = await run(out, { config: cfg({ epochs: 3 }), resume: true });
    expect(done.status).toBe('completed');
    expect((await fs.readdir(out)).filter((x) => /\.(old|new|tmp)-/.test(x))).toEqual([]);
    // exact resume: the same weights as the run that was never interrupted
    const a = await fs.readFile(path.join(reference, 'last', 'weights.bin'));
    const b = await fs.readFile(path.join(out, 'last', 'weights.bin'));
    expect(Buffer.compare(a, b)).toBe(0);
  });

  it('takes the complete new folder (.new) when there is no previous one', async () => {
    const { out, steps } = await killedRun();
    await fs.rename(path.join(out, 'last'), path.join(out, 'last.new-4242-1'));
    const { value: done, text } = await captureStderr(() => run(out, { config: cfg({ epochs: 3 }), resume: true }));
    expect(text).toMatch(/restored from last\.new-4242-1/);
    expect(text).toMatch(new RegExp(`step ${steps}`));
    expect(done.status).toBe('completed');
    expect(await fs.readdir(out)).not.toContain('last.new-4242-1');
  });
});

describe('a full disk', () => {
  it('is one DataError naming the file, with no temporaries left', async () => {
    const mnt = fresh();
    await fs.mkdir(mnt);
    let mounted = false;
    let restore = () => {};
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mnt], { stdio: 'ignore' });
      mounted = true;
      // fill the disk but for 24 KiB: the small files fit, the first checkpoint does not
      const h = await fs.open(path.join(mnt, 'filler'), 'w');
      await h.write(Buffer.alloc(232 * 1024)).catch(() => {});
      await h.close();
    } catch {
      console.warn('a tmpfs cannot be mounted here (needs root): simulating a full disk for weights.bin instead');
      const open = fs.open.bind(fs);
      const spy = vi.spyOn(fs, 'open').mockImplementation(async (file, ...rest) => {
        if (String(file).endsWith('weights.bin'))
          throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
        return open(file, ...rest);
      });
      restore = () => spy.mockRestore();
    }
    try {
      const out = path.join(mnt, 'model');
      const e = await run(out, {
        config: cfg({ epochs: 1 }, { embedDim: 32, units: 48, imageUnits: 48, hiddenUnits: 48 }),
      }).catch((x) => x);
      expect(e).toBeInstanceOf(DataError);
      expect(e.message).toMatch(new RegExp(`^${mnt}/model/\\S+: cannot write: no space left on device \\(ENOSPC\\)`));
      expect(e.message).not.toContain('\n');
      expect((await listAll(mnt)).filter((f) => /tmp|\.new-|\.old-/.test(f))).toEqual([]);
    } finally {
      restore();
      if (mounted) execFileSync('umount', [mnt]);
    }
  });
});

describe('no validation data', () => {
  it('says so, turns best-model selection off and records no validation figure', async () => {
    const out = fresh();
    const { value: r, text } = await captureStderr(() => run(out, { val: 0 }));
    expect(text).toMatch(
      /validation split is empty.*early stopping, learning-rate decay and best-model selection are off; best\/ will hold the last epoch's weights/,
    );
    expect(text).toMatch(/epoch 2: train loss \d\.\d+, no validation data/);
    expect(text).not.toMatch(/NaN|\(best\)/);
    expect(r.bestValLoss).toBeNull();
    expect(r.bestEpoch).toBe(2);
    const m = JSON.parse(await fs.readFile(path.join(out, 'manifest.json'), 'utf8'));
    expect(m.best).toBe('last-epoch');
    expect(m.metrics.bestValLoss).toBeNull();
    expect(m.metrics.lastValLoss).toBeNull();
    const hist = (await fs.readFile(path.join(out, 'history.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(hist.map((h) => h.valLoss)).toEqual([null, null]);
    // best/ holds the last epoch's weights
    const best = await loadDecoder(path.join(out, 'best'));
    const last = await loadDecoder(path.join(out, 'last'));
    try {
      expect(await best.readWeights()).toEqual(await last.readWeights());
    } finally {
      best.dispose();
      last.dispose();
    }
  });
});

describe('interrupts', () => {
  it('are seen between steps, not at the end of the epoch', async () => {
    const ctl = new AbortController();
    // abort from a macrotask, as a SIGINT handler runs
    const r = await run(fresh(), {
      config: cfg({ epochs: 1, batchSize: 2 }),
      signal: ctl.signal,
      onStep: (k) => k === 2 && setImmediate(() => ctl.abort()),
    });
    expect(r.status).toBe('interrupted');
    expect(r.steps).toBeLessThanOrEqual(3); // 16 captions x 2 / batch 2 = 16 steps in the epoch
  });

  it('in the last epoch are honoured, and --resume finishes the run', async () => {
    const out = fresh();
    const r = await run(out, { config: cfg({ epochs: 2 }), ...stopAt(6) }); // 4 steps an epoch
    expect(r.status).toBe('interrupted');
    const m = JSON.parse(await fs.readFile(path.join(out, 'manifest.json'), 'utf8'));
    expect(m.status).toBe('interrupted');
    const done = await run(out, { config: cfg({ epochs: 2 }), resume: true });
    expect(done).toMatchObject({ status: 'completed', epochs: 2, steps: 8 });
  });
});

describe('non-finite weights', () => {
  it('a diverging run stops with a ModelError and saves no NaN weights', async () => {
    const out = fresh();
    const e = await run(out, { config: diverging(cfg({ epochs: 3 })) }).catch((x) => x);
    expect(e).toBeInstanceOf(ModelError);
    expect(e.message).toMatch(/loss became (NaN|Infinity)/);
    for (const which of ['best', 'last'] as const) {
      const dir = path.join(out, which);
      if (await fs.stat(dir).catch(() => null)) {
        const d = await loadDecoder(dir); // throws on non-finite weights
        d.dispose();
      }
    }
  });

  it('are refused on load (ModelError, exit 4)', async () => {
    const out = fresh();
    await run(out, { config: cfg({ epochs: 1 }) });
    const bin = path.join(out, 'best', 'weights.bin');
    const buf = await fs.readFile(bin);
    buf.writeFloatLE(NaN, 8);
    await fs.writeFile(bin, buf);
    const e = await loadTrainedModel(out).catch((x) => x);
    expect(e).toBeInstanceOf(ModelError);
    expect(e.exitCode).toBe(4);
    expect(e.message).toMatch(/weights\.bin: tensor "[^"]+" holds NaN \(non-finite weights/);
  });
});
