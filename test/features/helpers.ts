// Test-only helpers for the features tests: generated images, a tiny ONNX encoder, a prepared dataset.
import * as path from 'node:path';
import sharp from 'sharp';
import { DataType, floatTensor, model, node, valueInfo } from '../../src/features/onnx/proto.js';
import { preprocessVgg16 } from '../../src/features/vgg16/preprocess.js';
import { VGG16_INPUT, type Vgg16Weights } from '../../src/features/vgg16/spec.js';
import { randomVgg16Weights } from '../../src/features/vgg16/weights.js';
import { rng } from '../../src/util/random.js';

/** Keras-like random VGG16 weights (H6's generator). */
export async function randomWeights(seed: number): Promise<Vgg16Weights> {
  return randomVgg16Weights(seed);
}

/** preprocess_input (caffe): RGB -> BGR minus means, NHWC. */
export const preprocess = (rgb: Uint8Array): Float32Array => preprocessVgg16(rgb);

/** A deterministic RGB image of side `size` (smooth gradients plus seeded noise). */
export function syntheticRgb(seed: number, size = VGG16_INPUT): Uint8Array {
  const r = rng(seed);
  const img = new Uint8Array(size * size * 3);
  const fx = 1 + r() * 4;
  const fy = 1 + r() * 4;
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      const i = (y * size + x) * 3;
      img[i] = (128 + 100 * Math.sin((x / size) * fx * Math.PI) + r() * 20) & 255;
      img[i + 1] = (128 + 100 * Math.cos((y / size) * fy * Math.PI) + r() * 20) & 255;
      img[i + 2] = ((x + y) * 255) / (2 * size) + r() * 10;
    }
  return img;
}

/** Encode raw RGB(A) pixels as an image file. */
export async function encodeImage(
  raw: Uint8Array,
  width: number,
  height: number,
  channels: 1 | 2 | 3 | 4,
  format: 'png' | 'jpeg' | 'webp' = 'png',
): Promise<Buffer> {
  const s = sharp(Buffer.from(raw), { raw: { width, height, channels } });
  return format === 'png'
    ? s.png().toBuffer()
    : format === 'jpeg'
      ? s.jpeg({ quality: 95 }).toBuffer()
      : s.webp({ lossless: true }).toBuffer();
}

/** Max |a-b| / max(1, max|b|). */
export function relMaxDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / Math.max(1, m);
}

/**
 * A small ONNX image encoder written with our own protobuf writer: NCHW float [N, 3, S, S] ->
 * Conv(3 -> C, 3x3, pad 1) -> Relu -> (Conv(C -> C, 3x3) -> Relu) x extra -> GlobalAveragePool -> [N, C].
 * `extra` and `size` make it as slow as a test needs.
 */
export function tinyEncoderOnnx(
  opts: {
    channels?: number;
    extra?: number;
    size?: number;
    seed?: number;
    layout?: 'nchw' | 'nhwc';
    batch?: number | string;
  } = {},
): Uint8Array {
  const C = opts.channels ?? 8;
  const S = opts.size ?? 32;
  const r = rng(opts.seed ?? 3);
  const w = (n: number, lim: number) => Float32Array.from({ length: n }, () => (r() * 2 - 1) * lim);
  const nhwc = opts.layout === 'nhwc';
  const nodes = [
    node('Conv', [nhwc ? 'xt' : 'x', 'w0', 'b0'], ['c0'], 'conv0', { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }),
    node('Relu', ['c0'], ['r0'], 'relu0'),
  ];
  if (nhwc) nodes.unshift(node('Transpose', ['x'], ['xt'], 'to_nchw', { perm: [0, 3, 1, 2] }));
  const inits = [floatTensor('w0', [C, 3, 3, 3], w(C * 27, 0.5)), floatTensor('b0', [C], w(C, 0.1))];
  let cur = 'r0';
  for (let k = 1; k <= (opts.extra ?? 0); k++) {
    nodes.push(
      node('Conv', [cur, `w${k}`, `b${k}`], [`c${k}`], `conv${k}`, { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }),
      node('Relu', [`c${k}`], [`r${k}`], `relu${k}`),
    );
    inits.push(
      floatTensor(`w${k}`, [C, C, 3, 3], w(C * C * 9, Math.sqrt(6 / (9 * C)))),
      floatTensor(`b${k}`, [C], w(C, 0.1)),
    );
    cur = `r${k}`;
  }
  nodes.push(node('GlobalAveragePool', [cur], ['g'], 'gap'), node('Flatten', ['g'], ['features'], 'flat', { axis: 1 }));
  return model({
    name: 'tiny',
    nodes,
    initializers: inits,
    inputs: [valueInfo('x', DataType.FLOAT, nhwc ? [opts.batch ?? 'N', S, S, 3] : [opts.batch ?? 'N', 3, S, S])],
    outputs: [valueInfo('features', DataType.FLOAT, [opts.batch ?? 'N', C])],
  }).encode();
}

/**
 * A prepared dataset folder (written with the prep module's own writer) whose images are `files`
 * (key -> file name under `imagesDir`). All images go to train except every 4th (val).
 */
export async function writeTinyPrepared(dir: string, imagesDir: string, keys: string[]): Promise<void> {
  const { writePrepared } = await import('../../src/prep/prepared.js');
  const { Vocab } = await import('../../src/text/vocab.js');
  const vocab = new Vocab(['<pad>', '<unk>', 'startseq', 'endseq', 'a', 'thing']);
  const sorted = [...keys].sort();
  const im = (k: string) => ({ image: k, file: k, captions: ['a thing'], tokens: [[2, 4, 5, 3]] });
  const splits = {
    train: sorted.filter((_, i) => i % 4 !== 3).map(im),
    val: sorted.filter((_, i) => i % 4 === 3).map(im),
    test: [],
  };
  await writePrepared(dir, {
    vocab,
    splits,
    manifest: {
      kind: 'captioner.prepared',
      version: 1,
      name: 't',
      createdAt: new Date().toISOString(),
      imagesDir: path.resolve(imagesDir),
    } as never,
  });
}
