// bench/parity-peer.py (via bench/parity.ts) reads our artifacts: a tiny prepared set written here and a
// feature cache written by our own cache writer (float16, several chunk files), and trains each decoder for one
// epoch. Skipped loudly without PyTorch.
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { boundedFeatureSource, openCacheWriter, openFeatureCache, type CacheSpec } from '../../src/features/cache.js';
import { rng } from '../../src/util/random.js';
import { tf } from '../../src/tf/tf.js';
import { decoderFeatureShape } from '../../src/model/decoders/batch.js';
import { decoderKind } from '../../src/model/decoders/index.js';
import { saveDecoder } from '../../src/model/runfolder.js';
import { Adam, byWeightName } from '../../src/train/adam.js';
import { batchesOf, buildBatch, examplesOf, mixSeed } from '../../src/train/data.js';
import { evaluateLoss } from '../../src/train/run.js';
import { warmupFactor } from '../../src/train/schedule.js';
import type { PreparedImage } from '../../src/prep/prepared.js';
import { runParityPeer } from '../../bench/parity.js';

function hasTorch(): boolean {
  try {
    execFileSync('/usr/bin/python3', ['-c', 'import torch, numpy'], { stdio: 'ignore', timeout: 60_000 });
    return true;
  } catch {
    return false;
  }
}

const torchOk = hasTorch();
if (!torchOk) console.warn('SKIP test/bench/parity-peer.e2e.test.ts: /usr/bin/python3 cannot import torch and numpy');

let work: string;
const key = (i: number) => `img${i}.jpg`;
const VOCAB = ['<pad>', '<unk>', '<start>', '<end>', 'a', 'red', 'blue', 'circle', 'square'];

/** Images 0..n-1, two captions each: <start> a (red|blue) (circle|square) <end>, coloured by parity. */
function split(from: number, to: number): string {
  const lines: string[] = [];
  for (let i = from; i < to; i++) {
    const c = i % 2 ? 5 : 6;
    lines.push(
      JSON.stringify({
        image: key(i),
        file: key(i),
        captions: ['x', 'y'],
        tokens: [
          [2, 4, c, 7, 3],
          [2, 4, c, 8, 3],
        ],
      }),
    );
  }
  return lines.join('\n') + '\n';
}

async function cache(name: string, shape: number[]): Promise<string> {
  const dir = path.join(work, name);
  const spec: CacheSpec = {
    encoder: {
      name: 'vgg16',
      fingerprint: 'sha256:enc',
      runtime: 'onnx',
      detail: 'test',
      weights: 'random',
      weightsFingerprint: 'random:seed=1',
      layer: shape.length > 1 ? 'block5_pool' : 'fc2',
      shape,
      preprocessing: {
        size: 224,
        resize: 'fill',
        interpolation: 'nearest',
        alpha: 'white',
        mode: 'caffe',
        mean: [1, 2, 3],
        channelOrder: 'bgr',
        layout: 'nhwc',
      },
    },
    dtype: 'float16',
  };
  const w = await openCacheWriter(dir, spec, { chunkSize: 3 });
  const n = shape.reduce((a, b) => a * b, 1);
  for (let i = 0; i < 12; i++) {
    const r = rng(i + 1);
    await w.add(
      key(i),
      Float32Array.from({ length: n }, (_, k) => Math.max(0, r() * 2 - 0.5) + (k % 2 === i % 2 ? 1 : 0)),
    );
  }
  await w.close();
  return dir;
}

beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-parity-'));
  const prepared = path.join(work, 'prepared');
  await fs.mkdir(prepared);
  await fs.writeFile(path.join(prepared, 'vocab.json'), JSON.stringify({ tokens: VOCAB }));
  await fs.writeFile(path.join(prepared, 'train.jsonl'), split(0, 10));
  await fs.writeFile(path.join(prepared, 'val.jsonl'), split(10, 12));
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

describe('parity peer', () => {
  it.skipIf(!torchOk)('trains the merge reference for one epoch on our prepared set and float16 cache', async () => {
    const features = await cache('fc', [16]);
    const r = await runParityPeer(
      path.join(work, 'prepared'),
      features,
      [
        '--model',
        'merge',
        '--epochs',
        '1',
        '--batch',
        '4',
        '--embed',
        '8',
        '--units',
        '8',
        '--image-units',
        '8',
        '--hidden-units',
        '8',
      ],
      { threads: 1 },
    );
    expect(r.epochs).toHaveLength(1);
    expect(r.epochs[0].epoch).toBe(1);
    // 20 captions of 4 targets; a 9-word vocabulary starts near ln 9 = 2.2
    expect(r.epochs[0].trainLoss).toBeGreaterThan(1);
    expect(r.epochs[0].trainLoss).toBeLessThan(3);
    expect(Number.isFinite(r.finalValLoss)).toBe(true);
    expect(r.finalValLoss).toBe(r.epochs[0].valLoss);
  });

  it.skipIf(!torchOk)(
    'with --adam ours it trains with the update of src/train/adam.ts, close to torch.optim.Adam',
    async () => {
      const features = await cache('fc-ours', [16]);
      const args = [
        '--epochs',
        '2',
        '--batch',
        '4',
        '--lr',
        '0.01',
        '--dropout',
        '0',
        '--clip',
        '0',
        '--seed',
        '3',
        '--embed',
        '8',
        '--units',
        '8',
        '--image-units',
        '8',
        '--hidden-units',
        '8',
      ];
      const ours = await runParityPeer(path.join(work, 'prepared'), features, ['--adam', 'ours', ...args], {
        threads: 1,
      });
      const torch = await runParityPeer(path.join(work, 'prepared'), features, ['--adam', 'torch', ...args], {
        threads: 1,
      });
      // same seed, no dropout: the two updates differ only in where epsilon goes
      expect(ours.epochs[1].trainLoss).toBeLessThan(ours.epochs[0].trainLoss);
      expect(Math.abs(ours.finalValLoss - torch.finalValLoss)).toBeLessThan(0.02);
    },
  );

  it.skipIf(!torchOk)('trains the attention reference for one epoch on a grid cache', async () => {
    const features = await cache('grid', [2, 2, 4]);
    const r = await runParityPeer(
      path.join(work, 'prepared'),
      features,
      ['--model', 'attention', '--epochs', '1', '--batch', '4', '--embed', '8', '--units', '8', '--attention-dim', '8'],
      { threads: 1 },
    );
    expect(r.epochs).toHaveLength(1);
    expect(Number.isFinite(r.finalValLoss)).toBe(true);
  });

  // exact mode: our initial weights (as a run folder saves them) and our batch order, dropout 0, our Adam
  // update in the peer: the validation loss of every epoch agrees to float rounding
  type Case = {
    kind: string;
    shape: number[];
    model: Record<string, unknown>;
    flags: string[];
    /** model.init, train.labelSmoothing and train.warmupSteps other than the defaults */
    recipe?: { init: 'keras' | 'torch'; smoothing: number; warmup: number };
  };
  const cases: Case[] = [
    {
      kind: 'merge',
      shape: [16],
      model: { embedDim: 8, units: 8, imageUnits: 8, hiddenUnits: 8, merge: 'add', dropout: 0 },
      flags: ['--image-units', '8', '--hidden-units', '8'],
    },
    {
      kind: 'attention',
      shape: [2, 2, 4],
      model: { embedDim: 8, units: 8, attentionDim: 6, alphaReg: 1, dropout: 0 },
      flags: ['--attention-dim', '6', '--alpha-reg', '1'],
    },
    {
      kind: 'transformer',
      shape: [2, 2, 4],
      model: {
        units: 8,
        dropout: 0,
        layers: 2,
        heads: 2,
        ffnDim: 12,
        positionEncoding: 'learned',
        imagePositions: 'learned',
        tieEmbeddings: true,
      },
      flags: [
        '--layers',
        '2',
        '--heads',
        '2',
        '--model-dim',
        '8',
        '--ffn-dim',
        '12',
        '--position-encoding',
        'learned',
        '--image-positions',
        'learned',
        '--tie-embeddings',
        'true',
      ],
    },
    {
      kind: 'transformer',
      shape: [3, 4],
      model: {
        units: 8,
        dropout: 0,
        layers: 1,
        heads: 4,
        ffnDim: 6,
        positionEncoding: 'sinusoidal',
        imagePositions: 'none',
        tieEmbeddings: false,
      },
      flags: [
        '--layers',
        '1',
        '--heads',
        '4',
        '--model-dim',
        '8',
        '--ffn-dim',
        '6',
        '--position-encoding',
        'sinusoidal',
        '--image-positions',
        'none',
        '--tie-embeddings',
        'false',
      ],
    },
  ];
  // the recipe settings on top of two of them (exact mode loads our weights, so torch init only changes what they are)
  const recipe = { init: 'torch', smoothing: 0.1, warmup: 3 } as const;
  for (const c of [...cases, { ...cases[0], recipe }, { ...cases[2], recipe }]) {
    it.skipIf(!torchOk)(
      `exact mode (${c.kind}, features [${c.shape.join(', ')}]${c.recipe ? `, init ${c.recipe.init}, label smoothing ${c.recipe.smoothing}, warm-up ${c.recipe.warmup} steps` : ''}): from our initial weights and batch order, the peer's validation losses match ours`,
      async () => {
        const tag = `${c.kind}-${c.shape.length}${c.recipe ? '-recipe' : ''}`;
        const dir = await cache(`exact-${tag}`, c.shape);
        const read = async (f: string) =>
          (await fs.readFile(path.join(work, 'prepared', f), 'utf8'))
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l) as PreparedImage);
        const trainEx = examplesOf(await read('train.jsonl'));
        const valEx = examplesOf(await read('val.jsonl'));
        const fc = await openFeatureCache(dir);
        const features = boundedFeatureSource(fc, { budgetBytes: 1 << 20, rows: 12 });
        const kind = decoderKind(c.kind);
        const spec = kind.specFromConfig(c.model, VOCAB.length, decoderFeatureShape(c.shape));
        const norm = kind.featureNorm(
          spec,
          [...new Set(trainEx.map((e) => e.image))].map((k) => features.get(k)),
        );
        const model = kind.create(spec, kind.initialWeights(spec, 5, c.recipe?.init), norm);
        const adam = new Adam(model.weights, { learningRate: 0.01, clipNorm: 5 });
        const epochs = 2;
        const ids = trainEx.map((_, i) => i);
        const order = {
          examples: trainEx.map((e) => e.image),
          epochs: Array.from({ length: epochs }, (_, e) => batchesOf(ids, 4, rng(mixSeed(5, e + 1)))),
        };
        const orderFile = path.join(work, `order-${tag}.json`);
        await fs.writeFile(orderFile, JSON.stringify(order));
        const init = path.join(work, `init-${tag}`);
        let step = 0;
        const ours: number[] = [];
        try {
          await saveDecoder(init, model);
          for (const batches of order.epochs) {
            for (const b of batches) {
              adam.learningRate = 0.01 * warmupFactor(++step, c.recipe?.warmup ?? 0);
              const { value, grads } = tf.variableGrads(
                () =>
                  model.loss(
                    buildBatch(
                      b.map((i) => trainEx[i]),
                      features,
                    ),
                    { training: true, labelSmoothing: c.recipe?.smoothing },
                  ),
                model.variables,
              );
              adam.apply(byWeightName(model.weights, grads)).dispose();
              tf.dispose([value, ...Object.values(grads)]);
            }
            ours.push((await evaluateLoss(model, valEx, features, 64))!);
          }
        } finally {
          adam.dispose();
          model.dispose();
          fc.close();
        }
        const args = [
          '--model',
          c.kind,
          '--epochs',
          String(epochs),
          '--batch',
          '4',
          '--lr',
          '0.01',
          '--dropout',
          '0',
          '--embed',
          '8',
          '--units',
          '8',
          ...c.flags,
          ...(c.recipe
            ? [
                '--init-scheme',
                c.recipe.init,
                '--label-smoothing',
                String(c.recipe.smoothing),
                '--warmup-steps',
                String(c.recipe.warmup),
              ]
            : []),
          '--init',
          init,
          '--order',
          orderFile,
        ];
        const peer = await runParityPeer(path.join(work, 'prepared'), dir, [...args, '--adam', 'ours'], { threads: 1 });
        expect(peer.epochs.map((e) => e.valLoss)).toHaveLength(epochs);
        peer.epochs.forEach((e, i) => expect(Math.abs(e.valLoss - ours[i]) / ours[i]).toBeLessThan(1e-4));
        expect(ours[1]).toBeLessThan(ours[0]); // it learned something
        expect(peer.normMaxAbsDiff).toBeLessThan(1e-6);
        // a batch order for other captions is refused
        await fs.writeFile(orderFile, JSON.stringify({ ...order, examples: order.examples.slice(1) }));
        await expect(runParityPeer(path.join(work, 'prepared'), dir, args, { threads: 1 })).rejects.toThrow(
          /batch order was computed for other training captions/,
        );
      },
    );
  }

  it.skipIf(!torchOk)('refuses a cache that lacks vectors of the prepared images', async () => {
    const features = await cache('fc-short', [16]);
    await fs.writeFile(path.join(work, 'prepared', 'val.jsonl'), split(10, 13));
    try {
      await expect(
        runParityPeer(path.join(work, 'prepared'), features, ['--epochs', '1'], { threads: 1 }),
      ).rejects.toThrow(/no vectors for 1 images/);
    } finally {
      await fs.writeFile(path.join(work, 'prepared', 'val.jsonl'), split(10, 12));
    }
  });
});
