// Test fixtures for the caption tests: a tiny ONNX image encoder (written with our protobuf writer), a
// run folder around it with a small random decoder, and generated image files (sharp), including bad ones.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { ConfigSchema, EncoderSchema } from '../../src/config/schema.js';
import { createEncoder } from '../../src/features/encoder.js';
import { DataType, floatTensor, model, node, valueInfo } from '../../src/features/onnx/proto.js';
import { AttentionDecoder } from '../../src/model/decoders/attention.js';
import { MergeDecoder } from '../../src/model/decoders/merge.js';
import {
  TRANSFORMER_MAX_LENGTH,
  TransformerDecoder,
  transformerInitialWeights,
  type TransformerSpec,
} from '../../src/model/decoders/transformer.js';
import * as runfolder from '../../src/model/runfolder.js';
import { writeUntrainedRun } from '../helpers/untrained-run.js';
import { rng } from '../../src/util/random.js';

export const WORDS = ['a', 'dog', 'cat', 'runs', 'on', 'the', 'grass', 'red', 'ball', 'man'];
export const TOKENS = ['<pad>', '<unk>', 'startseq', 'endseq', ...WORDS];

/** NCHW [N, 3, S, S] -> Conv(3 -> C, 3x3) -> Relu -> GlobalAveragePool -> [N, C]. */
export function tinyOnnx(opts: { channels?: number; size?: number; seed?: number } = {}): Uint8Array {
  const C = opts.channels ?? 16;
  const S = opts.size ?? 32;
  const r = rng(opts.seed ?? 3);
  const w = (n: number, lim: number) => Float32Array.from({ length: n }, () => (r() * 2 - 1) * lim);
  return model({
    name: 'tiny',
    nodes: [
      node('Conv', ['x', 'w0', 'b0'], ['c0'], 'conv0', { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }),
      node('Relu', ['c0'], ['r0'], 'relu0'),
      node('GlobalAveragePool', ['r0'], ['g'], 'gap'),
      node('Flatten', ['g'], ['features'], 'flat', { axis: 1 }),
    ],
    initializers: [floatTensor('w0', [C, 3, 3, 3], w(C * 27, 0.5)), floatTensor('b0', [C], w(C, 0.1))],
    inputs: [valueInfo('x', DataType.FLOAT, ['N', 3, S, S])],
    outputs: [valueInfo('features', DataType.FLOAT, ['N', C])],
  }).encode();
}

/** A run folder in `dir`: tiny ONNX encoder (written to dir/../encoder.onnx) + small random decoder. */
export async function makeRun(
  dir: string,
  opts: { seed?: number; onnxSeed?: number } = {},
): Promise<{ run: string; onnx: string }> {
  await fs.mkdir(dir, { recursive: true });
  const onnx = path.join(dir, 'encoder.onnx');
  await fs.writeFile(onnx, tinyOnnx({ seed: opts.onnxSeed }));
  const encCfg = EncoderSchema.parse({ type: 'onnx', onnx: { path: onnx } });
  const enc = await createEncoder(encCfg, { threads: 1 });
  const info = enc.info;
  await enc.dispose();
  const decoder = MergeDecoder.create(
    {
      vocabSize: TOKENS.length,
      featureDim: info.shape[0],
      embedDim: 8,
      units: 16,
      imageUnits: 16,
      hiddenUnits: 16,
      merge: 'add',
      dropout: 0,
    },
    opts.seed ?? 7,
  );
  const run = path.join(dir, 'run');
  try {
    await writeUntrainedRun(runfolder, run, {
      decoder,
      tokens: TOKENS,
      encoder: info,
      name: 'tiny-test',
      config: ConfigSchema.parse({}),
    });
  } finally {
    decoder.dispose();
  }
  return { run, onnx };
}

/** NCHW [N, 3, 32, 32] -> Conv(3 -> C, 3x3) -> Relu -> MaxPool 8x8 -> Transpose -> NHWC grid [N, 4, 4, C]. */
export function gridOnnx(opts: { channels?: number; seed?: number } = {}): Uint8Array {
  const C = opts.channels ?? 4;
  const r = rng(opts.seed ?? 5);
  const w = (n: number, lim: number) => Float32Array.from({ length: n }, () => (r() * 2 - 1) * lim);
  return model({
    name: 'tiny-grid',
    nodes: [
      node('Conv', ['x', 'w0', 'b0'], ['c0'], 'conv0', { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }),
      node('Relu', ['c0'], ['r0'], 'relu0'),
      node('MaxPool', ['r0'], ['p0'], 'pool0', { kernel_shape: [8, 8], strides: [8, 8] }),
      node('Transpose', ['p0'], ['grid'], 'nhwc', { perm: [0, 2, 3, 1] }),
    ],
    initializers: [floatTensor('w0', [C, 3, 3, 3], w(C * 27, 0.5)), floatTensor('b0', [C], w(C, 0.1))],
    inputs: [valueInfo('x', DataType.FLOAT, ['N', 3, 32, 32])],
    outputs: [valueInfo('grid', DataType.FLOAT, ['N', 4, 4, C])],
  }).encode();
}

/** A run folder in `dir` with an untrained ATTENTION (or, with type, TRANSFORMER) decoder over a tiny ONNX encoder's [4, 4, 4] grid. */
export async function makeAttentionRun(
  dir: string,
  opts: { seed?: number; type?: 'attention' | 'transformer' } = {},
): Promise<{ run: string; onnx: string }> {
  await fs.mkdir(dir, { recursive: true });
  const onnx = path.join(dir, 'grid.onnx');
  await fs.writeFile(onnx, gridOnnx());
  // a [4, 4, 4] grid does not say which side holds the channels: the config says hwc, and the run records it
  const encoder = { type: 'onnx', onnx: { path: onnx, outputLayout: 'hwc' } } as const;
  const enc = await createEncoder(EncoderSchema.parse(encoder), { threads: 1 });
  const info = enc.info;
  await enc.dispose();
  const [h, w, c] = info.shape;
  const decoder =
    opts.type === 'transformer'
      ? tinyTransformer(h * w, c, opts.seed ?? 7)
      : AttentionDecoder.create(
          {
            vocabSize: TOKENS.length,
            positions: h * w,
            channels: c,
            embedDim: 8,
            units: 12,
            attentionDim: 8,
            dropout: 0,
            alphaReg: 1,
          },
          opts.seed ?? 7,
        );
  const run = path.join(dir, 'run');
  try {
    await writeUntrainedRun(runfolder, run, {
      decoder,
      tokens: TOKENS,
      encoder: info,
      name: `tiny-${opts.type ?? 'attention'}`,
      config: ConfigSchema.parse({ encoder }),
    });
  } finally {
    decoder.dispose();
  }
  return { run, onnx };
}

/**
 * An untrained transformer over P x C features whose end token starts unlikely: with tied embeddings an
 * untrained one would otherwise end every caption at once (no words to attach attention rows to).
 */
function tinyTransformer(P: number, C: number, seed: number): TransformerDecoder {
  const spec: TransformerSpec = {
    vocabSize: TOKENS.length,
    positions: P,
    channels: C,
    layers: 2,
    heads: 2,
    modelDim: 8,
    ffnDim: 12,
    dropout: 0,
    positionEncoding: 'sinusoidal',
    imagePositions: 'learned',
    tieEmbeddings: true,
    maxLength: TRANSFORMER_MAX_LENGTH,
  };
  const w = transformerInitialWeights(spec, seed);
  w['output/bias'][TOKENS.indexOf('endseq')] = -3;
  return new TransformerDecoder(spec, w, { mean: new Float32Array(C), std: new Float32Array(C).fill(1) });
}

/** A small PNG/JPEG with seeded noise. */
export async function imageFile(
  file: string,
  seed: number,
  format: 'png' | 'jpeg' | 'webp' = 'jpeg',
  size = 40,
): Promise<void> {
  const r = rng(seed);
  const raw = Buffer.from(Array.from({ length: size * size * 3 }, () => Math.floor(r() * 256)));
  const s = sharp(raw, { raw: { width: size, height: size, channels: 3 } });
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, await (format === 'png' ? s.png() : format === 'webp' ? s.webp() : s.jpeg()).toBuffer());
}

function crc32(buf: Uint8Array): number {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return ~c >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), Buffer.from(data)]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** A PNG that declares width x height (a decompression bomb's header) with almost no pixel data. */
export function bombPng(width = 20000, height = 20000): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', new Uint8Array([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])),
    chunk('IEND', new Uint8Array()),
  ]);
}
