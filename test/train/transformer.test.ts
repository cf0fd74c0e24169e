// Training the Transformer decoder through the real train(): on a grid cache it learns, records model.type
// transformer and its spec, validates on the cross-entropy, resumes to byte-identical weights (dropout on),
// trains data-parallel (workers 2, replicas built from the registry) to the main thread's losses, and
// refuses a vector cache with a DataError naming the features to make. Spawns dist/train/parallel/worker.js
// for the workers case: build first (npx tsc -p .).
import { describe, it, expect, beforeAll } from 'vitest';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { tf } from '../../src/tf/tf.js';
import { ConfigSchema, type Config } from '../../src/config/schema.js';
import { evaluateLoss, train, type FeatureInfo } from '../../src/train/run.js';
import { examplesOf } from '../../src/train/data.js';
import { loadTrainedModel } from '../../src/model/runfolder.js';
import { decodeFeatures } from '../../src/decode/decode.js';
import { DataError } from '../../src/errors.js';
import { synthetic } from './synthetic.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
  process.env.CAPTIONER_QUIET = '1';
});

function cfg(over: Record<string, unknown> = {}, transformer: Record<string, unknown> = {}): Config {
  return ConfigSchema.parse({
    model: {
      type: 'transformer',
      units: 16,
      transformer: { layers: 2, heads: 4, ffnDim: 24, dropout: 0.1, ...transformer },
    },
    train: { epochs: 4, batchSize: 16, learningRate: 0.005, patience: 0, seed: 7, ...over },
  });
}

/** A block5_pool-like cache: [2, 2, 4] per image (16 floats, NHWC). */
const gridInfo = (): FeatureInfo => ({
  dir: '/synthetic/grid',
  fingerprint: 'g'.repeat(64),
  encoder: { name: 'vgg16', layer: 'block5_pool' },
  shape: [2, 2, 4],
  dtype: 'float32',
});
const tmp = () => fs.mkdtemp(path.join(os.tmpdir(), 'captioner-train-transformer-'));

describe('train: transformer decoder', () => {
  it('trains on a grid cache, records model.type and spec, validates on the cross-entropy, and captions', async () => {
    const s = synthetic({ dim: 16, train: 32, val: 8 });
    const out = await tmp();
    const before = tf.memory().numTensors;
    const res = await train({
      config: cfg(),
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
    expect(manifest.model).toMatchObject({
      type: 'transformer',
      spec: {
        positions: 4,
        channels: 4,
        layers: 2,
        heads: 4,
        modelDim: 16,
        ffnDim: 24,
        dropout: 0.1,
        tieEmbeddings: true,
      },
    });
    const state = JSON.parse(await fs.readFile(path.join(out, 'last', 'state.json'), 'utf8'));
    expect(state.type).toBe('transformer');
    const m = await loadTrainedModel(out);
    try {
      expect(m.decoder.type).toBe('transformer');
      const val = examplesOf(s.prepared.splits.val);
      expect(await evaluateLoss(m.decoder, val, s.features, 64)).toBeCloseTo(res.bestValLoss!, 4);
      const n = tf.memory().numTensors;
      const caps = await decodeFeatures(
        m,
        s.prepared.splits.test.map((im) => s.features.get(im.image)),
        { beam: 3, maxLength: 8, lengthPenalty: 'none', alpha: 0.7, attention: true },
      );
      expect(tf.memory().numTensors).toBe(n);
      expect(caps).toHaveLength(8);
      for (const c of caps) expect(c.attention).toHaveLength(c.tokens.length);
    } finally {
      m.decoder.dispose();
    }
  }, 120_000);

  it('resumes to exactly the same weights, dropout on', async () => {
    const s = synthetic({ dim: 16, train: 16, val: 8 });
    const c = cfg({ epochs: 2 });
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
        config: cfg({ epochs: 2 }, { layers: 3 }),
        prepared: s.prepared,
        features: s.features,
        featureInfo: gridInfo(),
        out: b,
        backend: 'cpu',
        resume: true,
      }),
    ).rejects.toThrow(/--resume: model\.transformer\.layers: 2 -> 3 cannot change/);
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

  it('trains data-parallel (workers 2) to the losses of the main thread, dropout off', async () => {
    const s = synthetic({ dim: 16, train: 16, val: 8 });
    const one = await train({
      config: cfg({ epochs: 2 }, { dropout: 0 }),
      prepared: s.prepared,
      features: s.features,
      featureInfo: gridInfo(),
      out: await tmp(),
      backend: 'cpu',
    });
    const two = await train({
      config: cfg({ epochs: 2, workers: 2 }, { dropout: 0 }),
      prepared: s.prepared,
      features: s.features,
      featureInfo: gridInfo(),
      out: await tmp(),
      backend: 'cpu',
    });
    expect(two.status).toBe('completed');
    two.history.forEach((h, i) => expect(h.valLoss).toBeCloseTo(one.history[i].valLoss, 3));
  }, 120_000);

  it('refuses a vector (fc2) cache with a DataError that says which features to make', async () => {
    const s = synthetic({ dim: 16, train: 8, val: 4 });
    const info: FeatureInfo = {
      dir: '/synthetic/fc2',
      fingerprint: 'v'.repeat(64),
      encoder: { name: 'vgg16', layer: 'fc2' },
      shape: [16],
      dtype: 'float32',
    };
    const e = await train({
      config: cfg({ epochs: 1 }),
      prepared: s.prepared,
      features: s.features,
      featureInfo: info,
      out: await tmp(),
      backend: 'cpu',
    }).catch((x) => x);
    expect(e).toBeInstanceOf(DataError);
    expect(e.message).toMatch(
      /model\.type transformer attends over a grid.*\[16\] \(layer fc2\).*block5_conv3.*block5_pool/,
    );
  });
});
