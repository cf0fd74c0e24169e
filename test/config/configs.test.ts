import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { captionsFor, makeScene } from '../../src/prep/demo-scene.js';
import { writeDemoDataset } from '../../src/prep/demo.js';
import { repoRoot } from '../helpers/cli.js';

process.env.CAPTIONER_QUIET = '1';
const dir = path.join(repoRoot, 'configs');
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.yaml'))
  .sort();
const SCHEMA_LINE = '# yaml-language-server: $schema=./captioner.schema.json';

/** Lines that hold a key (`key:` at any depth) and lack a comment on the line or just above it. */
function uncommentedKeys(text: string): string[] {
  const lines = text.split('\n');
  const bad: string[] = [];
  lines.forEach((line, i) => {
    const m = /^\s*([A-Za-z_$][\w$]*)\s*:/.exec(line);
    if (!m) return;
    if (/\s#\s*\S/.test(line.slice(m[0].length))) return;
    let j = i - 1;
    while (j >= 0 && lines[j].trim() === '') j--;
    if (j >= 0 && lines[j].trim().startsWith('#')) return;
    bad.push(`line ${i + 1}: ${line.trim()}`);
  });
  return bad;
}

describe('configs/*.yaml', () => {
  it('has the ready configs', () => {
    expect(files).toEqual(
      expect.arrayContaining([
        'coco.yaml',
        'coco-attention.yaml',
        'coco-transformer.yaml',
        'demo.yaml',
        'flickr30k.yaml',
        'flickr8k.yaml',
        'flickr8k-attention.yaml',
        'flickr8k-resnet101-onnx.yaml',
      ]),
    );
  });

  describe.each(files)('%s', (file) => {
    const full = path.join(dir, file);
    const text = readFileSync(full, 'utf8');

    it('points editors at the JSON Schema', () => {
      expect(text.split('\n')[0]).toBe(SCHEMA_LINE);
    });

    it('is a valid config', async () => {
      const { config } = await loadConfig({ file: full });
      expect(config.name).toBe(path.basename(file, '.yaml'));
      if (config.model.type === 'merge' && config.model.merge === 'add')
        expect(config.model.imageUnits).toBe(config.model.units);
      expect(config.decode.maxLength).toBeLessThanOrEqual(config.prep.maxLength);
    });

    it('explains every field with a comment', () => {
      expect(uncommentedKeys(text)).toEqual([]);
    });

    it('uses paths relative to the repository root, under data/ and work/', async () => {
      const { config } = await loadConfig({ file: full });
      const d = config.dataset;
      const paths = [
        d.captions,
        d.images,
        d.split.trainFile,
        d.split.valFile,
        d.split.testFile,
        ...Object.values(d.cocoFiles ?? {}),
        config.encoder.onnx?.path,
      ].filter((p): p is string => typeof p === 'string');
      expect(paths.length).toBeGreaterThan(0);
      for (const p of paths) {
        expect(path.isAbsolute(p), p).toBe(false);
        expect(p.startsWith('data/'), p).toBe(true);
      }
      expect(config.workdir.startsWith('work/')).toBe(true);
    });
  });
});

describe('the comment check', () => {
  it('flags keys without a comment', () => {
    expect(uncommentedKeys('# a\na: 1\nb: 2 # two\nc:\n  # d\n  d: 1\n  e: 2\n')).toEqual([
      'line 4: c:',
      'line 7: e: 2',
    ]);
  });
});

describe('configs/flickr8k-resnet101-onnx.yaml', () => {
  it('is an ONNX encoder config with torchvision ImageNet preprocessing, feeding the attention decoder', async () => {
    const { config } = await loadConfig({ file: path.join(dir, 'flickr8k-resnet101-onnx.yaml') });
    expect(config.encoder).toMatchObject({
      type: 'onnx',
      onnx: {
        path: 'data/models/resnet101.onnx',
        input: 'image',
        output: 'conv5',
        size: 224,
        resize: 'shorter',
        resizeSize: 256,
        interpolation: 'bilinear',
        range: '0-1',
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        channelOrder: 'rgb',
        layout: 'nchw',
      },
    });
    expect(config.model.type).toBe('attention');
  });
});

describe('configs/demo.yaml', () => {
  it('names the files `captioner demo-data` writes, and fits the longest demo caption', async () => {
    const { config } = await loadConfig({ file: path.join(dir, 'demo.yaml') });
    expect(config.encoder.weights).toBe('random');
    expect(config.dataset.format).toBe('flickr8k');
    const out = path.join(mkdtempSync(path.join(tmpdir(), 'demo-cfg-')), 'demo');
    await writeDemoDataset({ out, images: 3, size: 64 });
    const d = config.dataset;
    for (const p of [d.captions!, d.images!, d.split.trainFile!, d.split.valFile!, d.split.testFile!]) {
      expect(p.startsWith('data/demo/'), p).toBe(true);
      expect(existsSync(path.join(out, p.slice('data/demo/'.length))), p).toBe(true);
    }
    let longest = 0;
    for (const kind of ['single', 'multi'] as const) {
      for (let i = 0; i < 5000; i++)
        for (const c of captionsFor(makeScene(1, i, kind), 1)) longest = Math.max(longest, c.split(' ').length);
    }
    expect(longest + 2).toBeLessThanOrEqual(config.prep.maxLength);
    expect(longest + 1).toBeLessThanOrEqual(config.decode.maxLength);
  });
});
