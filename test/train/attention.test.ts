// Training through the decoder registry: an attention model on a grid feature cache (validation on the
// cross-entropy alone, exact resume, model.type recorded and frozen), a clear DataError for attention on
// a vector cache, a merge model mean-pooling a grid cache, and resuming a run written in format 1.
import { describe, it, expect, beforeAll } from 'vitest';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { tf } from '../../src/tf/tf.js';
import { ConfigSchema, type Config } from '../../src/config/schema.js';
import { evaluateLoss, train, type FeatureInfo } from '../../src/train/run.js';
import { examplesOf, buildBatch } from '../../src/train/data.js';
import { loadTrainedModel } from '../../src/model/runfolder.js';
import { DataError } from '../../src/errors.js';
import { synthetic } from './synthetic.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
  process.env.CAPTIONER_QUIET = '1';
});

function cfg(type: 'merge' | 'attention', over: Record<string, unknown> = {}): Config {
  return ConfigSchema.parse({
    model: {
      type,
      embedDim: 12,
      units: 16,
      imageUnits: 16,
      hiddenUnits: 16,
      dropout: 0.1,
      attention: { attentionDim: 8 },
    },
    train: { epochs: 4, batchSize: 16, learningRate: 0.01, patience: 0, seed: 7, ...over },
  });
}

/** A block5_pool-like cache: [2, 2, 4] per image (16 floats, NHWC). */
const gridInfo = (fp = 'g'.repeat(64)): FeatureInfo => ({
  dir: '/synthetic/grid',
  fingerprint: fp,
  encoder: { name: 'vgg16', layer: 'block5_pool' },
  shape: [2, 2, 4],
  dtype: 'float32',
});
const vectorInfo = (): FeatureInfo => ({
  dir: '/synthetic/fc2',
  fingerprint: 'v'.repeat(64),
  encoder: { name: 'vgg16', layer: 'fc2' },
  shape: [16],
  dtype: 'float32',
});
const tmp = () => fs.mkdtemp(path.join(os.tmpdir(), 'captioner-train-att-'));

describe('train: attention decoder', () => {
  it('trains on a grid cache, records model.type, and validates on the cross-entropy alone', async () => {
    const s = synthetic({ dim: 16, train: 32, val: 8 });
    const out = await tmp();
    const before = tf.memory().numTensors;
    const res = await train({
      config: cfg('attention'),
      prepared: s.prepared,
      features: s.features,
      featureInfo: gridInfo(),
      out,
      backend: 'cpu',
    });
    expect(tf.memory().numTensors).toBe(before);
    expect(res.status).toBe('completed');
    expect(res.bestValLoss!).toBeLessThan(res.history[0].valLoss);
    const manifest = JSON.parse(await fs.readFile(path.join(out, 'manifest.json'), 'utf8'));
    expect(manifest.version).toBe(2);
    expect(manifest.model).toMatchObject({
      type: 'attention',
      spec: { positions: 4, channels: 4, attentionDim: 8, alphaReg: 1 },
    });
    const state = JSON.parse(await fs.readFile(path.join(out, 'last', 'state.json'), 'utf8'));
    expect(state.type).toBe('attention');
    const m = await loadTrainedModel(out);
    try {
      expect(m.decoder.type).toBe('attention');
      const val = examplesOf(s.prepared.splits.val);
      // the recorded best validation loss is the cross-entropy: the penalty (large) is left out
      expect(await evaluateLoss(m.decoder, val, s.features, 64)).toBeCloseTo(res.bestValLoss!, 4);
      const batch = buildBatch(val, s.features);
      const terms = m.decoder.lossTerms(batch, { training: false });
      expect(terms.alphaPenalty.dataSync()[0]).toBeGreaterThan(0);
      tf.dispose(Object.values(terms));
    } finally {
      m.decoder.dispose();
    }
  }, 120_000);

  it('resumes to exactly the same weights; model.type cannot change on --resume', async () => {
    const s = synthetic({ dim: 16, train: 16, val: 8 });
    const c = cfg('attention', { epochs: 2 });
    const a = await tmp();
    const b = await tmp();
    await train({
      config: c,
      prepared: s.prepared,
      features: s.features,
      featureInfo: gridInfo(),
      out: a,
      backend: 'cpu',
    });
    const ctl = new AbortController();
    const part = await train({
      config: c,
      prepared: s.prepared,
      features: s.features,
      featureInfo: gridInfo(),
      out: b,
      backend: 'cpu',
      signal: ctl.signal,
      onStep: (n) => n >= 1 && ctl.abort(),
    });
    expect(part.status).toBe('interrupted');
    await expect(
      train({
        config: cfg('merge', { epochs: 2 }),
        prepared: s.prepared,
        features: s.features,
        featureInfo: gridInfo(),
        out: b,
        backend: 'cpu',
        resume: true,
      }),
    ).rejects.toThrow(/--resume: model\.type: "attention" -> "merge" cannot change during a run/);
    const done = await train({
      config: c,
      prepared: s.prepared,
      features: s.features,
      featureInfo: gridInfo(),
      out: b,
      backend: 'cpu',
      resume: true,
    });
    expect(done.status).toBe('completed');
    expect(
      Buffer.compare(
        await fs.readFile(path.join(a, 'last', 'weights.bin')),
        await fs.readFile(path.join(b, 'last', 'weights.bin')),
      ),
    ).toBe(0);
  }, 120_000);

  it('refuses a vector (fc2) cache with a DataError that says which features to make', async () => {
    const s = synthetic({ dim: 16, train: 8, val: 4 });
    const e = await train({
      config: cfg('attention', { epochs: 1 }),
      prepared: s.prepared,
      features: s.features,
      featureInfo: vectorInfo(),
      out: await tmp(),
      backend: 'cpu',
    }).catch((x) => x);
    expect(e).toBeInstanceOf(DataError);
    expect(e.message).toMatch(
      /model\.type attention attends over a grid.*\[16\] \(layer fc2\).*encoder\.layer block5_conv3.*block5_pool/,
    );
  });
});

describe('train: merge decoder on a grid cache', () => {
  it('mean-pools the grid (spec.positions recorded) and decodes raw grid features', async () => {
    const s = synthetic({ dim: 16, train: 16, val: 8 });
    const out = await tmp();
    await train({
      config: cfg('merge', { epochs: 2 }),
      prepared: s.prepared,
      features: s.features,
      featureInfo: gridInfo(),
      out,
      backend: 'cpu',
    });
    const manifest = JSON.parse(await fs.readFile(path.join(out, 'manifest.json'), 'utf8'));
    expect(manifest.model).toMatchObject({ type: 'merge', spec: { featureDim: 4, positions: 4 } });
    const m = await loadTrainedModel(out);
    try {
      expect(m.decoder.featureShape).toEqual([4, 4]);
      expect(m.decoder.norm.mean).toHaveLength(4);
    } finally {
      m.decoder.dispose();
    }
  });
});

describe('train: a run folder written in format 1', () => {
  it('resumes (no model.type in config.yaml, state.json or the weights) to the same weights as an uninterrupted run', async () => {
    const s = synthetic({ train: 16, val: 8 });
    const c = cfg('merge', { epochs: 2 });
    const info: FeatureInfo = {
      dir: '/synthetic/features',
      fingerprint: 'c'.repeat(64),
      encoder: { name: 'vgg16', layer: 'fc2' },
      shape: [12],
      dtype: 'float32',
    };
    const a = await tmp();
    const b = await tmp();
    await train({ config: c, prepared: s.prepared, features: s.features, featureInfo: info, out: a, backend: 'cpu' });
    const ctl = new AbortController();
    await train({
      config: c,
      prepared: s.prepared,
      features: s.features,
      featureInfo: info,
      out: b,
      backend: 'cpu',
      signal: ctl.signal,
      onStep: (n) => n >= 1 && ctl.abort(),
    });
    // turn b into what the version-1 code wrote
    const edit = async (file: string, f: (j: Record<string, unknown>) => Record<string, unknown>) =>
      fs.writeFile(file, JSON.stringify(f(JSON.parse(await fs.readFile(file, 'utf8')))));
    await edit(path.join(b, 'manifest.json'), (j) => ({
      ...j,
      version: 1,
      model: (j.model as { spec: unknown }).spec,
    }));
    await edit(path.join(b, 'last', 'state.json'), (j) => ({ ...j, type: undefined }));
    await edit(path.join(b, 'last', 'weights.json'), (j) => ({
      ...j,
      meta: { ...(j.meta as object), type: undefined },
    }));
    const conf = YAML.parse(await fs.readFile(path.join(b, 'config.yaml'), 'utf8'));
    delete conf.model.type;
    delete conf.model.attention;
    await fs.writeFile(path.join(b, 'config.yaml'), YAML.stringify(conf));
    const done = await train({
      config: c,
      prepared: s.prepared,
      features: s.features,
      featureInfo: info,
      out: b,
      backend: 'cpu',
      resume: true,
    });
    expect(done.status).toBe('completed');
    expect(
      Buffer.compare(
        await fs.readFile(path.join(a, 'last', 'weights.bin')),
        await fs.readFile(path.join(b, 'last', 'weights.bin')),
      ),
    ).toBe(0);
    expect(JSON.parse(await fs.readFile(path.join(b, 'manifest.json'), 'utf8'))).toMatchObject({
      version: 2,
      model: { type: 'merge' },
    });
  });
});
