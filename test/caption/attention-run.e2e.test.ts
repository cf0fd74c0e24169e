// End to end with the attention decoder, through the CLI: a generated dataset of coloured squares, a
// tiny ONNX encoder that outputs a [4, 4, 4] grid (NHWC, like VGG16 block5_pool), then prep, features,
// train (model.type attention), eval and caption; the same for model.type transformer, whose eval report
// and caption --attention-maps show its cross-attention. Also: a merge model trains on the same grid cache
// by mean-pooling it, and an attention run refuses a vector cache with a clear message.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import YAML from 'yaml';
import { DataType, floatTensor, model, node, valueInfo } from '../../src/features/onnx/proto.js';
import { rng } from '../../src/util/random.js';
import { runCli } from '../helpers/cli.js';
import { tinyOnnx } from './fixtures.js';

/** NCHW [N, 3, 32, 32] -> Conv(3 -> 4, 3x3) -> Relu -> MaxPool 8x8 -> [N, 4, 4, 4] -> Transpose -> NHWC [N, 4, 4, 4]. */
function gridOnnx(): Uint8Array {
  const r = rng(5);
  const w = (n: number, lim: number) => Float32Array.from({ length: n }, () => (r() * 2 - 1) * lim);
  return model({
    name: 'tiny-grid',
    nodes: [
      node('Conv', ['x', 'w0', 'b0'], ['c0'], 'conv0', { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }),
      node('Relu', ['c0'], ['r0'], 'relu0'),
      node('MaxPool', ['r0'], ['p0'], 'pool0', { kernel_shape: [8, 8], strides: [8, 8] }),
      node('Transpose', ['p0'], ['grid'], 'nhwc', { perm: [0, 2, 3, 1] }),
    ],
    initializers: [floatTensor('w0', [4, 3, 3, 3], w(108, 0.5)), floatTensor('b0', [4], w(4, 0.1))],
    inputs: [valueInfo('x', DataType.FLOAT, ['N', 3, 32, 32])],
    outputs: [valueInfo('grid', DataType.FLOAT, ['N', 4, 4, 4])],
  }).encode();
}

const COLOURS = [
  { name: 'red', rgb: { r: 220, g: 30, b: 30 } },
  { name: 'blue', rgb: { r: 30, g: 30, b: 220 } },
];
const name = (i: number) => `img${String(i).padStart(2, '0')}.png`;

let dir: string;
let images: string;

/** A config file for `type` reading the encoder `onnx` into `work`. */
async function writeConfig(
  file: string,
  work: string,
  onnx: string,
  type: 'attention' | 'merge' | 'transformer',
): Promise<void> {
  const data = path.join(dir, 'data');
  await fs.writeFile(
    file,
    YAML.stringify({
      name: `${type}-e2e`,
      workdir: work,
      backend: 'cpu',
      threads: 1,
      dataset: {
        format: 'flickr8k',
        captions: path.join(data, 'captions.txt'),
        images,
        split: {
          method: 'files',
          trainFile: path.join(data, 'train.txt'),
          valFile: path.join(data, 'val.txt'),
          testFile: path.join(data, 'test.txt'),
        },
      },
      prep: { minCount: 1, maxLength: 10 },
      encoder: { type: 'onnx', onnx: { path: onnx, outputLayout: 'hwc' } },
      model: {
        type,
        embedDim: 8,
        units: 12,
        imageUnits: 12,
        hiddenUnits: 12,
        dropout: 0,
        attention: { attentionDim: 8 },
        transformer: { layers: 2, heads: 2, dropout: 0 },
      },
      train: { epochs: 3, batchSize: 8, learningRate: 0.01, patience: 0 },
      decode: { beam: 2, maxLength: 8 },
    }),
  );
}

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-attention-e2e-'));
  const data = path.join(dir, 'data');
  images = path.join(data, 'images');
  await fs.mkdir(images, { recursive: true });
  const lines: string[] = [];
  for (let i = 0; i < 16; i++) {
    const c = COLOURS[i % 2];
    // a coloured square on a grey background, at a position that varies with i
    const sq = await sharp({ create: { width: 12, height: 12, channels: 3, background: c.rgb } })
      .png()
      .toBuffer();
    await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 128, g: 128, b: 128 } } })
      .composite([{ input: sq, left: (i * 5) % 20, top: (i * 3) % 20 }])
      .png()
      .toFile(path.join(images, name(i)));
    lines.push(`${name(i)}#0\tA ${c.name} square.`, `${name(i)}#1\tthe ${c.name} square`);
  }
  await fs.writeFile(path.join(data, 'captions.txt'), lines.join('\n') + '\n');
  const list = (from: number, to: number) =>
    Array.from({ length: to - from }, (_, k) => name(from + k)).join('\n') + '\n';
  await fs.writeFile(path.join(data, 'train.txt'), list(0, 10));
  await fs.writeFile(path.join(data, 'val.txt'), list(10, 12));
  await fs.writeFile(path.join(data, 'test.txt'), list(12, 16));
  await fs.writeFile(path.join(dir, 'grid.onnx'), gridOnnx());
  await fs.writeFile(path.join(dir, 'vector.onnx'), tinyOnnx({ channels: 8 }));
});

afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe('an attention run, end to end', () => {
  it('prep, features (a [4, 4, 4] grid), train, eval and caption', async () => {
    const conf = path.join(dir, 'attention.yaml');
    const work = path.join(dir, 'att');
    await writeConfig(conf, work, path.join(dir, 'grid.onnx'), 'attention');
    for (const stage of ['prep', 'features', 'train']) {
      const r = await runCli([stage, '--config', conf]);
      expect(r.stderr).toBe('');
      expect(r.code, `${stage}: ${r.stderr}`).toBe(0);
    }
    const cache = JSON.parse(await fs.readFile(path.join(work, 'features', 'manifest.json'), 'utf8'));
    expect(cache.shape).toEqual([4, 4, 4]);
    const run = path.join(work, 'model');
    const manifest = JSON.parse(await fs.readFile(path.join(run, 'manifest.json'), 'utf8'));
    expect(manifest).toMatchObject({
      version: 2,
      model: { type: 'attention', spec: { positions: 16, channels: 4, attentionDim: 8 } },
      features: { shape: [4, 4, 4] },
    });

    const ev = await runCli(['eval', '--config', conf, '--json']);
    expect(ev.code, ev.stderr).toBe(0);
    const rep = JSON.parse(ev.stdout);
    expect(rep.metrics.images).toBe(4);

    const cap = await runCli(['caption', images, '--model', run, '--set', 'backend=cpu', '--set', 'threads=1']);
    expect(cap.code, cap.stderr).toBe(0);
    const out = cap.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { image: string; caption?: string });
    expect(out).toHaveLength(16);
    for (const o of out) expect(typeof o.caption).toBe('string');
  });

  it('a transformer run: prep, features, train, eval (report.html with attention views) and caption --attention-maps', async () => {
    const conf = path.join(dir, 'transformer.yaml');
    const work = path.join(dir, 'transformer');
    await writeConfig(conf, work, path.join(dir, 'grid.onnx'), 'transformer');
    for (const stage of ['prep', 'features', 'train']) {
      const r = await runCli([stage, '--config', conf]);
      expect(r.stderr).toBe('');
      expect(r.code, `${stage}: ${r.stderr}`).toBe(0);
    }
    const run = path.join(work, 'model');
    const manifest = JSON.parse(await fs.readFile(path.join(run, 'manifest.json'), 'utf8'));
    expect(manifest).toMatchObject({
      model: { type: 'transformer', spec: { positions: 16, channels: 4, modelDim: 12, heads: 2, layers: 2 } },
      features: { shape: [4, 4, 4] },
    });

    const ev = await runCli(['eval', '--config', conf, '--json']);
    expect(ev.code, ev.stderr).toBe(0);
    expect(JSON.parse(ev.stdout).metrics.images).toBe(4);
    const html = await fs.readFile(path.join(run, 'eval-test', 'report.html'), 'utf8');
    const views = html.match(/<figure class="attn-view" data-grid="4 4">/g) ?? [];
    expect(views.length).toBeGreaterThan(0);

    const maps = path.join(dir, 'transformer-maps');
    const cap = await runCli([
      'caption',
      images,
      '--model',
      run,
      '--attention-maps',
      maps,
      '--set',
      'backend=cpu',
      '--set',
      'threads=1',
    ]);
    expect(cap.code, cap.stderr).toBe(0);
    const out = cap.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { image: string; caption?: string; attention?: string });
    expect(out).toHaveLength(16);
    const drawn = out.filter((o) => o.caption);
    expect(drawn.length).toBe(16);
    for (const o of drawn) {
      expect(o.attention).toMatch(/\.png$/);
      const meta = await sharp(path.join(maps, path.basename(o.attention!))).metadata();
      expect(meta.format).toBe('png');
    }
  });

  it('a merge run mean-pools the same grid; an attention config on a vector encoder says which output to use (features: exit 2, train: exit 3)', async () => {
    const conf = path.join(dir, 'merge.yaml');
    const work = path.join(dir, 'merge');
    await writeConfig(conf, work, path.join(dir, 'grid.onnx'), 'merge');
    for (const stage of ['prep', 'features', 'train']) expect((await runCli([stage, '--config', conf])).code).toBe(0);
    const manifest = JSON.parse(await fs.readFile(path.join(work, 'model', 'manifest.json'), 'utf8'));
    expect(manifest.model).toMatchObject({ type: 'merge', spec: { featureDim: 4, positions: 16 } });
    const cap = await runCli([
      'caption',
      path.join(images, name(0)),
      '--model',
      path.join(work, 'model'),
      '--set',
      'backend=cpu',
    ]);
    expect(cap.code, cap.stderr).toBe(0);

    const vconf = path.join(dir, 'vector.yaml');
    const vwork = path.join(dir, 'vector');
    await writeConfig(vconf, vwork, path.join(dir, 'vector.onnx'), 'attention');
    expect((await runCli(['prep', '--config', vconf])).code).toBe(0);
    // the features stage refuses first (exit 2), before encoding anything ...
    const f = await runCli(['features', '--config', vconf]);
    expect(f.code).toBe(2);
    expect(f.stderr).toMatch(
      /model\.type attention attends over a grid of image positions, but output "features" of \S+vector\.onnx gives one vector per image \[8\]; set encoder\.onnx\.output to a grid or tokens output/,
    );
    // ... and train refuses a vector cache made anyway (here: by a merge config) with exit 3
    expect((await runCli(['features', '--config', vconf, '--set', 'model.type=merge'])).code).toBe(0);
    const r = await runCli(['train', '--config', vconf]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(
      /^error: .*model\.type attention attends over a grid of image positions, but this feature cache holds one vector per image \[8\].*block5_conv3.*block5_pool/,
    );
  });
});
