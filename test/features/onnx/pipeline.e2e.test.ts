// An ONNX encoder the test writes itself (test/helpers/onnx-models.ts: a grid, tokens and a pooled vector
// from one small conv net), end to end through the CLI on a small generated demo set: prep, features,
// train, eval and caption, for each decoder on each output it reads. Then what a change does: other
// preprocessing or another model file is never served from the old cache, and a run refuses to caption
// with a model file that is not the one it was trained on.
//
// To cover a new decoder that reads grids and tokens, add its model.type to GRID_DECODERS.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeDemoDataset } from '../../../src/prep/demo.js';
import { runCli } from '../../helpers/cli.js';
import { testImageModel } from '../../helpers/onnx-models.js';

/** Decoders that attend over grid positions or tokens (model.type values). */
const GRID_DECODERS: string[] = ['attention', 'transformer'];

interface Case {
  type: string;
  output: 'grid' | 'tokens' | 'pooled';
  /** Per-image shape in the feature cache. */
  cached: number[];
}
const CASES: Case[] = [
  ...GRID_DECODERS.flatMap((type): Case[] => [
    { type, output: 'grid', cached: [4, 4, 6] },
    { type, output: 'tokens', cached: [16, 6] },
  ]),
  { type: 'merge', output: 'pooled', cached: [6] },
];

let dir: string;
let data: string;
let model: string;

/** A config for `c`: the demo set, the test model's output, features per output (shared by decoders). */
async function writeConfig(c: Case): Promise<{ file: string; work: string; features: string }> {
  const work = path.join(dir, `${c.type}-${c.output}`);
  const features = path.join(dir, 'features', c.output);
  const file = path.join(dir, `${c.type}-${c.output}.yaml`);
  await fs.writeFile(
    file,
    YAML.stringify({
      name: `onnx-${c.type}-${c.output}`,
      workdir: work,
      backend: 'cpu',
      threads: 1,
      dataset: {
        format: 'flickr8k',
        captions: path.join(data, 'captions.txt'),
        images: path.join(data, 'images'),
        split: {
          method: 'files',
          trainFile: path.join(data, 'trainImages.txt'),
          valFile: path.join(data, 'valImages.txt'),
          testFile: path.join(data, 'testImages.txt'),
        },
      },
      prep: { minCount: 1, maxLength: 20, out: path.join(dir, 'prepared') },
      // 48px pictures: shorter side to 40, centre 32x32 crop (what torchvision's Resize + CenterCrop does)
      encoder: { type: 'onnx', onnx: { path: model, output: c.output, resizeSize: 40, interpolation: 'bilinear' } },
      features: { out: features, batchSize: 5 },
      model: {
        type: c.type,
        embedDim: 8,
        units: 12,
        imageUnits: 12,
        hiddenUnits: 12,
        dropout: 0,
        attention: { attentionDim: 8 },
        transformer: { layers: 2, heads: 2, dropout: 0 },
      },
      train: { epochs: 2, batchSize: 16, learningRate: 0.01, patience: 0 },
      decode: { beam: 2, maxLength: 12, workers: 1 },
    }),
  );
  return { file, work, features };
}

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'cap-onnx-e2e-'));
  data = path.join(dir, 'data');
  await writeDemoDataset({ out: data, images: 20, size: 48, seed: 5 });
  model = path.join(dir, 'encoder.onnx');
  await fs.writeFile(model, testImageModel({ outputs: ['grid', 'tokens', 'pooled'] }));
  const first = await writeConfig(CASES[0]);
  const prep = await runCli(['prep', '--config', first.file]);
  expect(prep.code, prep.stderr).toBe(0);
});

afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe('an ONNX encoder, end to end', () => {
  it.each(CASES)(
    '$type on the $output output: features, train, eval and caption',
    async (c) => {
      const { file, work, features } = await writeConfig(c);
      const f = await runCli(['features', '--config', file, '--json']);
      expect(f.code, f.stderr).toBe(0);
      const fr = JSON.parse(f.stdout);
      expect(fr.cached).toBe(20);
      const cache = JSON.parse(await fs.readFile(path.join(features, 'manifest.json'), 'utf8'));
      expect(cache).toMatchObject({
        shape: c.cached,
        layer: c.output,
        weights: model,
        encoder: { name: 'onnx:encoder.onnx', runtime: 'onnx' },
      });
      expect(cache.preprocessing).toMatchObject({
        size: 32,
        resize: 'shorter',
        resizeSize: 40,
        interpolation: 'bilinear',
        layout: 'nchw',
      });

      const t = await runCli(['train', '--config', file]);
      expect(t.code, t.stderr).toBe(0);
      const run = path.join(work, 'model');
      const manifest = JSON.parse(await fs.readFile(path.join(run, 'manifest.json'), 'utf8'));
      expect(manifest).toMatchObject({
        model: { type: c.type },
        features: { shape: c.cached, encoder: { name: 'onnx:encoder.onnx', layer: c.output } },
      });

      const ev = await runCli(['eval', '--config', file, '--json']);
      expect(ev.code, ev.stderr).toBe(0);
      const rep = JSON.parse(ev.stdout);
      expect(rep.metrics.images).toBe(2);
      for (const k of ['Bleu_1', 'Bleu_4', 'CIDEr', 'ROUGE_L']) expect(Number.isFinite(rep.metrics[k]), k).toBe(true);

      const cap = await runCli([
        'caption',
        path.join(data, 'images'),
        '--model',
        run,
        '--set',
        'backend=cpu',
        '--set',
        'threads=1',
      ]);
      expect(cap.code, cap.stderr).toBe(0);
      const lines = cap.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { image: string; caption?: string });
      expect(lines).toHaveLength(20);
      for (const l of lines) expect(typeof l.caption).toBe('string');

      // attention maps: drawn over a grid; tokens have no picture grid, which --attention-maps says
      if (c.type === 'merge') return;
      const maps = path.join(work, 'maps');
      const one = path.join(data, 'images', lines[0].image.split('/').pop()!);
      const am = await runCli([
        'caption',
        one,
        '--model',
        run,
        '--attention-maps',
        maps,
        '--set',
        'backend=cpu',
        '--set',
        'threads=1',
      ]);
      if (c.output === 'grid') {
        expect(am.code, am.stderr).toBe(0);
        expect((await fs.readdir(maps)).filter((f) => f.endsWith('.png'))).toHaveLength(1);
      } else {
        expect(am.code).toBe(2);
        expect(am.stderr).toMatch(
          /--attention-maps: \S+ attends over tokens \[16, 6\] of its encoder, not over an image grid/,
        );
      }
    },
    300_000,
  );
});

describe('a change of settings or model file', () => {
  it('is never served from the old cache: the old folder is refused, a fresh one is filled anew', async () => {
    const c = CASES.find((x) => x.output === 'pooled')!;
    const { file, features } = await writeConfig(c);
    expect((await runCli(['features', '--config', file])).code).toBe(0); // cached already (or now)
    const before = JSON.parse(await fs.readFile(path.join(features, 'manifest.json'), 'utf8'));
    for (const set of [
      'encoder.onnx.interpolation=bicubic',
      'encoder.onnx.resizeSize=48',
      'encoder.onnx.mean=[0.5, 0.5, 0.5]',
      'encoder.onnx.channelOrder=bgr',
    ]) {
      const same = await runCli(['features', '--config', file, '--set', set]);
      expect(same.code, set).toBe(3);
      expect(same.stderr).toMatch(
        /holds features computed with different settings .*delete the folder or choose another --out/,
      );
    }
    const fresh = path.join(dir, 'features-bicubic');
    const r = await runCli([
      'features',
      '--config',
      file,
      '--set',
      'encoder.onnx.interpolation=bicubic',
      '--out',
      fresh,
      '--json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ alreadyCached: 0, encoded: 20 });
    const after = JSON.parse(await fs.readFile(path.join(fresh, 'manifest.json'), 'utf8'));
    expect(after.fingerprint).not.toBe(before.fingerprint);

    // another model under the same file name
    const saved = await fs.readFile(model);
    try {
      await fs.writeFile(model, testImageModel({ outputs: ['grid', 'tokens', 'pooled'], seed: 77 }));
      const m = await runCli(['features', '--config', file]);
      expect(m.code).toBe(3);
      expect(m.stderr).toMatch(/holds features computed with different settings/);
      // ... and a model trained on the old file's features refuses to caption with the new one
      const run = path.join(dir, `${c.type}-${c.output}`, 'model');
      const cap = await runCli(['caption', path.join(data, 'images'), '--model', run, '--set', 'backend=cpu']);
      expect(cap.code).toBe(4);
      expect(cap.stderr).toMatch(
        /the image encoder available now is not the one this model was trained with: weights \S+encoder\.onnx have fingerprint sha256:/,
      );
    } finally {
      await fs.writeFile(model, saved);
    }
  });
});
