// A tiny trained run for the eval tests, made with the real stages: images rendered with sharp, a
// Flickr8k-format captions file, runPrep, a feature cache written with the real writer (8-d vectors
// that encode each image's colour, standing in for VGG16), and a short real training run.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { openCacheWriter, type CacheSpec } from '../../src/features/cache.js';
import { runPrep } from '../../src/prep/run.js';
import { runTrain } from '../../src/train/stage.js';

export const COLOURS = [
  { name: 'red', rgb: { r: 220, g: 30, b: 30 } },
  { name: 'blue', rgb: { r: 30, g: 30, b: 220 } },
];

export const DIM = 8;

export function fakeSpec(fingerprint = 'fake-encoder', grid = false): CacheSpec {
  return {
    encoder: {
      name: 'vgg16',
      fingerprint,
      runtime: 'onnx',
      detail: 'test stand-in',
      weights: 'random',
      weightsFingerprint: 'random:seed=1',
      layer: grid ? 'block5_pool' : 'fc2',
      preprocessing: {
        size: 224,
        resize: 'fill',
        interpolation: 'nearest',
        alpha: 'white',
        mode: 'caffe',
        mean: [103.939, 116.779, 123.68],
        channelOrder: 'bgr',
        layout: 'nhwc',
      },
      shape: grid ? [2, 2, DIM / 4] : [DIM], // a grid: the same 8 values as 2 x 2 positions x 2 channels
    },
    dtype: 'float32',
  };
}

export const imageName = (i: number) => `img${String(i).padStart(2, '0')}.png`;
export const colourOf = (i: number) => COLOURS[i % 2];

/** Feature vector of image i: its colour one-hot (scaled) plus a little per-image noise. */
export function vectorOf(i: number): Float32Array {
  const v = new Float32Array(DIM);
  v[i % 2] = 1;
  for (let k = 2; k < DIM; k++) v[k] = ((i * 7 + k * 3) % 11) / 50;
  return v;
}

export interface EvalFixture {
  dir: string;
  config: Config;
  model: string;
  images: string;
  features: string;
  prepared: string;
}

/** COCO image id of image i in the `coco` fixture. */
export const cocoIdOf = (i: number) => 9000 + i * 7;

/**
 * 16 images: 0-9 train, 10-11 val, 12-15 test. `format: 'coco'` writes the captions as three official-format
 * COCO files (data/coco_{train,val,test}.json, ids cocoIdOf(i)) instead of a Flickr8k token file.
 */
export async function buildTrainedRun(
  dir: string,
  opts: { epochs?: number; skipFeature?: string; format?: 'flickr8k' | 'coco'; attention?: boolean } = {},
): Promise<EvalFixture> {
  const images = path.join(dir, 'data', 'images');
  await fs.mkdir(images, { recursive: true });
  const lines: string[] = [];
  const n = 16;
  for (let i = 0; i < n; i++) {
    const c = colourOf(i);
    await sharp({ create: { width: 32, height: 24, channels: 3, background: c.rgb } })
      .png()
      .toFile(path.join(images, imageName(i)));
    lines.push(
      `${imageName(i)}#0\tA ${c.name} square.`,
      `${imageName(i)}#1\tthe ${c.name} square`,
      `${imageName(i)}#2\ta picture of a ${c.name} square`,
    );
  }
  const data = path.join(dir, 'data');
  await fs.writeFile(path.join(data, 'captions.txt'), lines.join('\n') + '\n');
  const list = (from: number, to: number) =>
    Array.from({ length: to - from }, (_, k) => imageName(from + k)).join('\n') + '\n';
  await fs.writeFile(path.join(data, 'train.txt'), list(0, 10));
  await fs.writeFile(path.join(data, 'val.txt'), list(10, 12));
  await fs.writeFile(path.join(data, 'test.txt'), list(12, 16));
  const cocoFile = async (split: string, from: number, to: number) => {
    const ids = Array.from({ length: to - from }, (_, k) => from + k);
    const doc = {
      images: ids.map((i) => ({ id: cocoIdOf(i), file_name: imageName(i) })),
      annotations: ids.flatMap((i) =>
        lines
          .filter((l) => l.startsWith(imageName(i)))
          .map((l, k) => ({ image_id: cocoIdOf(i), id: i * 10 + k, caption: l.split('\t')[1] })),
      ),
    };
    const f = path.join(data, `coco_${split}.json`);
    await fs.writeFile(f, JSON.stringify(doc));
    return f;
  };
  const dataset =
    opts.format === 'coco'
      ? {
          format: 'coco' as const,
          images,
          cocoFiles: {
            train: await cocoFile('train', 0, 10),
            val: await cocoFile('val', 10, 12),
            test: await cocoFile('test', 12, 16),
          },
        }
      : {
          format: 'flickr8k' as const,
          captions: path.join(data, 'captions.txt'),
          images,
          split: {
            method: 'files' as const,
            trainFile: path.join(data, 'train.txt'),
            valFile: path.join(data, 'val.txt'),
            testFile: path.join(data, 'test.txt'),
          },
        };
  const { config } = await loadConfig({
    overrides: {
      name: 'evaltest',
      workdir: dir,
      backend: 'cpu',
      dataset,
      prep: { minCount: 1, maxLength: 10 },
      model: {
        type: opts.attention ? 'attention' : 'merge',
        embedDim: 8,
        units: 12,
        imageUnits: 12,
        hiddenUnits: 12,
        dropout: 0,
        attention: { attentionDim: 8 },
      },
      train: { epochs: opts.epochs ?? 2, batchSize: 8, learningRate: 0.01, patience: 0 },
      decode: { beam: 2, maxLength: 8 },
    },
  });
  await runPrep(config);
  const features = path.join(dir, 'features');
  const w = await openCacheWriter(features, fakeSpec('fake-encoder', opts.attention), { chunkSize: 64 });
  for (let i = 0; i < n; i++) if (imageName(i) !== opts.skipFeature) await w.add(imageName(i), vectorOf(i));
  await w.close();
  await runTrain(config);
  return { dir, config, model: path.join(dir, 'model'), images, features, prepared: path.join(dir, 'prepared') };
}
