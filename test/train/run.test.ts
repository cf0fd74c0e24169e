// Training runs on tiny synthetic data: loss falls, greedy decoding names the class, checkpoints resume
// exactly, mismatches are refused.
import { describe, it, expect, beforeAll } from 'vitest';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { tf } from '../../src/tf/tf.js';
import { ConfigSchema, type Config } from '../../src/config/schema.js';
import { train, type FeatureInfo } from '../../src/train/run.js';
import { loadTrainedModel } from '../../src/model/runfolder.js';
import { greedyDecode } from '../helpers/greedy.js';
import { DataError, UsageError } from '../../src/errors.js';
import { synthetic, CLASSES } from './synthetic.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
  process.env.CAPTIONER_QUIET = '1';
});

function cfg(over: Record<string, unknown> = {}): Config {
  return ConfigSchema.parse({
    model: { embedDim: 16, units: 24, imageUnits: 24, hiddenUnits: 24, dropout: 0.1 },
    train: { epochs: 12, batchSize: 16, learningRate: 0.01, patience: 0, seed: 7, ...over },
  });
}

const info = (fp = 'c'.repeat(64)): FeatureInfo => ({
  dir: '/synthetic/features',
  fingerprint: fp,
  encoder: { name: 'vgg16', layer: 'fc2' },
  shape: [12],
  dtype: 'float32',
});

/** train() on the synthetic set `s` on cpu, writing `out`; `extra` adds options (resume, signal, onStep). */
const trainOn = (
  s: ReturnType<typeof synthetic>,
  config: Config,
  out: string,
  extra: Partial<Parameters<typeof train>[0]> = {},
) => train({ config, prepared: s.prepared, features: s.features, featureInfo: info(), out, backend: 'cpu', ...extra });

async function tmp(): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), 'captioner-train-'));
}

describe('train', () => {
  it('cuts validation loss and learns to name the class', async () => {
    const s = synthetic();
    const out = await tmp();
    const before = tf.memory().numTensors;
    const res = await train({
      config: cfg(),
      prepared: s.prepared,
      features: s.features,
      featureInfo: info(),
      out,
      backend: 'cpu',
    });
    expect(tf.memory().numTensors).toBe(before);
    expect(res.status).toBe('completed');
    const first = res.history[0].valLoss;
    const best = res.bestValLoss;
    expect(best).toBeLessThan(first * 0.5);
    // files
    for (const f of [
      'best/weights.json',
      'best/weights.bin',
      'last/state.json',
      'last/optimizer.bin',
      'vocab.json',
      'config.yaml',
      'manifest.json',
      'history.jsonl',
      'loss.svg',
    ]) {
      await fs.access(path.join(out, f));
    }
    const manifest = JSON.parse(await fs.readFile(path.join(out, 'manifest.json'), 'utf8'));
    expect(manifest.kind).toBe('captioner.model');
    expect(manifest.features.encoder).toEqual({ name: 'vgg16', layer: 'fc2' });
    expect(manifest.metrics.bestEpoch).toBe(res.bestEpoch);
    const hist = (await fs.readFile(path.join(out, 'history.jsonl'), 'utf8')).trim().split('\n');
    expect(hist).toHaveLength(12);
    expect(await fs.readFile(path.join(out, 'loss.svg'), 'utf8')).toContain('<polyline');
    // greedy decoding with the saved best model names the class
    const m = await loadTrainedModel(out);
    try {
      const val = s.prepared.splits.val;
      const seqs = await greedyDecode(
        m.decoder,
        val.map((v) => s.features.get(v.image)),
        { start: 2, end: 3, maxLength: 10 },
      );
      const right = seqs.filter((seq, i) =>
        seq.map((id) => m.vocab.tokens[id]).includes(CLASSES[s.classOf.get(val[i].image)!]),
      ).length;
      // chance: the most frequent class among validation images
      const counts = CLASSES.map((_, c) => val.filter((v) => s.classOf.get(v.image) === c).length);
      const chance = Math.max(...counts) / val.length;
      expect(right / val.length).toBeGreaterThanOrEqual(chance + 0.5 * (1 - chance));
    } finally {
      m.decoder.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
  }, 180_000); // ~55 s on a loaded 2-core machine

  it('resumes an interrupted run to exactly the same weights as an uninterrupted one', async () => {
    const s = synthetic({ train: 24, val: 8 });
    const c = cfg({ epochs: 3 });
    const a = await tmp();
    const b = await tmp();
    await train({ config: c, prepared: s.prepared, features: s.features, featureInfo: info(), out: a, backend: 'cpu' });
    const ctl = new AbortController();
    const part = await train({
      config: c,
      prepared: s.prepared,
      features: s.features,
      featureInfo: info(),
      out: b,
      backend: 'cpu',
      signal: ctl.signal,
      onStep: (n) => n >= 4 && ctl.abort(),
    });
    expect(part.steps).toBe(4);
    expect(part.status).toBe('interrupted');
    await expect(
      train({ config: c, prepared: s.prepared, features: s.features, featureInfo: info(), out: b, backend: 'cpu' }),
    ).rejects.toBeInstanceOf(UsageError);
    await expect(
      train({
        config: c,
        prepared: s.prepared,
        features: s.features,
        featureInfo: info('d'.repeat(64)),
        out: b,
        backend: 'cpu',
        resume: true,
      }),
    ).rejects.toThrow(/feature cache changed/);
    const done = await train({
      config: c,
      prepared: s.prepared,
      features: s.features,
      featureInfo: info(),
      out: b,
      backend: 'cpu',
      resume: true,
    });
    expect(done.status).toBe('completed');
    expect(done.history).toHaveLength(3);
    const wa = await fs.readFile(path.join(a, 'last', 'weights.bin'));
    const wb = await fs.readFile(path.join(b, 'last', 'weights.bin'));
    expect(Buffer.compare(wa, wb)).toBe(0);
  });

  it('records the recipe (model.init, labelSmoothing, warmupSteps), and resumes mid-warm-up to the same weights', async () => {
    const s = synthetic({ train: 24, val: 8 });
    const recipe = ConfigSchema.parse({
      model: { embedDim: 16, units: 24, imageUnits: 24, hiddenUnits: 24, dropout: 0.1, init: 'torch' },
      train: {
        epochs: 3,
        batchSize: 16,
        learningRate: 0.01,
        patience: 0,
        seed: 7,
        labelSmoothing: 0.1,
        warmupSteps: 5,
      },
    });
    const a = await tmp();
    const b = await tmp();
    const plain = await tmp();
    await trainOn(s, recipe, a);
    const ctl = new AbortController();
    const part = await trainOn(s, recipe, b, { signal: ctl.signal, onStep: (n) => n >= 3 && ctl.abort() });
    expect(part.steps).toBe(3); // inside the 5 warm-up steps
    const done = await trainOn(s, recipe, b, { resume: true });
    expect(done.status).toBe('completed');
    const wa = await fs.readFile(path.join(a, 'last', 'weights.bin'));
    expect(Buffer.compare(wa, await fs.readFile(path.join(b, 'last', 'weights.bin')))).toBe(0);
    const yaml = await fs.readFile(path.join(b, 'config.yaml'), 'utf8');
    expect(yaml).toMatch(/init: torch/);
    expect(yaml).toMatch(/labelSmoothing: 0\.1/);
    expect(yaml).toMatch(/warmupSteps: 5/);
    // the recipe changes the weights: a run without smoothing and warm-up ends elsewhere
    await trainOn(s, cfg({ epochs: 3 }), plain);
    expect(Buffer.compare(wa, await fs.readFile(path.join(plain, 'last', 'weights.bin')))).not.toBe(0);
    // the recipe's auto defaults are recorded as what they resolved to: the merge decoder's torch, 0, 0
    const plainYaml = await fs.readFile(path.join(plain, 'config.yaml'), 'utf8');
    expect(plainYaml).toMatch(/init: torch/);
    expect(plainYaml).toMatch(/labelSmoothing: 0\n/);
    expect(plainYaml).toMatch(/warmupSteps: 0\n/);
    // --resume with a config that says auto keeps the run's own smoothing and warm-up: nothing logged but epochs
    const more = await trainOn(s, cfg({ epochs: 4 }), b, { resume: true });
    expect(more.status).toBe('completed');
    const changes = JSON.parse(await fs.readFile(path.join(b, 'manifest.json'), 'utf8')).changes;
    expect(changes.map((ch: { key: string }) => ch.key)).toEqual(['train.epochs']);
    const after = await fs.readFile(path.join(b, 'config.yaml'), 'utf8');
    expect(after).toMatch(/labelSmoothing: 0\.1/);
    expect(after).toMatch(/warmupSteps: 5\n/);
  });

  it('warm-up scales the first steps: with warmupSteps far beyond the run the weights barely move', async () => {
    const s = synthetic({ train: 24, val: 8 });
    const run = async (over: Record<string, unknown>, abort = false) => {
      const out = await tmp();
      const ctl = new AbortController();
      if (abort) ctl.abort(); // stopped before its first step: last/ holds the initial weights
      await trainOn(s, cfg({ epochs: 1, ...over }), out, { signal: ctl.signal });
      const buf = await fs.readFile(path.join(out, 'last', 'weights.bin'));
      return new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    };
    const start = await run({}, true);
    const moved = (w: Float32Array) => Math.max(...w.map((v, i) => Math.abs(v - start[i])));
    expect(moved(await run({}))).toBeGreaterThan(1e-3);
    // 2 steps at learningRate 0.01 x (1 or 2) / 1e6: Adam moves each weight by about that much per step
    expect(moved(await run({ warmupSteps: 1_000_000 }))).toBeLessThan(1e-6);
  });

  it('--resume of a run recorded before the recipe settings existed: it had keras init, no smoothing, no warm-up', async () => {
    const s = synthetic({ train: 24, val: 8 });
    const out = await tmp();
    const c = cfg({ epochs: 2 });
    const ctl = new AbortController();
    await trainOn(s, c, out, { signal: ctl.signal, onStep: (n) => n >= 1 && ctl.abort() });
    // an older run's config.yaml: none of the three keys
    const file = path.join(out, 'config.yaml');
    const old = (await fs.readFile(file, 'utf8'))
      .split('\n')
      .filter((l) => !/^\s*(init|labelSmoothing|warmupSteps):/.test(l))
      .join('\n');
    await fs.writeFile(file, old);
    const now = ConfigSchema.parse({
      model: { ...c.model, init: 'torch' },
      train: { ...c.train, labelSmoothing: 0.1 },
    });
    const done = await trainOn(s, now, out, { resume: true });
    expect(done.status).toBe('completed');
    const manifest = JSON.parse(await fs.readFile(path.join(out, 'manifest.json'), 'utf8'));
    // smoothing is applied from the resumed step on and logged as a change; init only applies to a new run
    expect(manifest.changes.map((ch: { key: string; from: unknown; to: unknown }) => [ch.key, ch.from, ch.to])).toEqual(
      [['train.labelSmoothing', 0, 0.1]],
    );
    const yaml = await fs.readFile(file, 'utf8');
    expect(yaml).toMatch(/init: keras/);
    expect(yaml).toMatch(/labelSmoothing: 0\.1/);
  });

  it('refuses a feature cache that lacks images', async () => {
    const s = synthetic({ train: 8, val: 4 });
    s.features.map.delete('val_0001.jpg');
    await expect(
      train({
        config: cfg({ epochs: 1 }),
        prepared: s.prepared,
        features: s.features,
        featureInfo: info(),
        out: await tmp(),
        backend: 'cpu',
      }),
    ).rejects.toThrow(DataError);
    await expect(
      train({
        config: cfg({ epochs: 1 }),
        prepared: s.prepared,
        features: s.features,
        featureInfo: info(),
        out: await tmp(),
        backend: 'cpu',
      }),
    ).rejects.toThrow(/1 of 4 val images \(e\.g\. val_0001\.jpg\)/);
  });
});
