// The user ONNX encoder (encoder.type onnx) on small models the test writes itself (test/helpers/onnx-models.ts):
// what each output shape becomes in the cache, input layouts, dynamic sizes, the fingerprint, and a clear
// error naming the model file and the fix for every model it cannot use.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EncoderSchema } from '../../../src/config/schema.js';
import { ConfigError, ModelError } from '../../../src/errors.js';
import { cacheFingerprint } from '../../../src/features/cache.js';
import { createEncoder } from '../../../src/features/encoder.js';
import type { ImageEncoder } from '../../../src/features/types.js';
import { externalDataFiles } from '../../../src/features/onnx/external.js';
import { testImageModel, testImageModelExternal, type TestModelOptions } from '../../helpers/onnx-models.js';
import { syntheticRgb } from '../helpers.js';

let work: string;
beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'cap-onnx-enc-'));
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

let n = 0;
/** Write a test model; returns its path. */
async function modelFile(opts: TestModelOptions, name = `m${n++}.onnx`): Promise<string> {
  const file = path.join(work, name);
  await fs.writeFile(file, testImageModel(opts));
  return file;
}

const encoderFor = (onnx: Record<string, unknown>) =>
  createEncoder(EncoderSchema.parse({ type: 'onnx', onnx }), { threads: 1 });

async function encodeWith(
  onnx: Record<string, unknown>,
  images: Uint8Array[],
): Promise<{ enc: ImageEncoder['info']; out: Float32Array[] }> {
  const e = await encoderFor(onnx);
  try {
    return { enc: e.info, out: await e.encode(images) };
  } finally {
    await e.dispose();
  }
}

const images = (size: number) => [syntheticRgb(1, size), syntheticRgb(2, size), syntheticRgb(3, size)];

/** The error `p` rejects with: of `type`, naming `file` first, one line. */
async function failure(
  p: Promise<unknown>,
  type: typeof ConfigError | typeof ModelError,
  file: string,
): Promise<string> {
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(type);
  const m = (e as Error).message;
  expect(m.startsWith(`${file}: `), m).toBe(true);
  expect(m).not.toMatch(/\n/);
  return m;
}

describe('what an output becomes in the feature cache', () => {
  it('a [C, H, W] grid, an [H, W, C] grid and [T, D] tokens of the same numbers are cached alike, as [H, W, C] / [P, C]', async () => {
    const file = await modelFile({ outputs: ['grid', 'grid_hwc', 'tokens'] });
    const imgs = images(32);
    const chw = await encodeWith({ path: file, output: 'grid' }, imgs);
    const hwc = await encodeWith({ path: file, output: 'grid_hwc' }, imgs);
    const tok = await encodeWith({ path: file, output: 'tokens' }, imgs);
    expect(chw.enc.shape).toEqual([4, 4, 6]);
    expect(hwc.enc.shape).toEqual([4, 4, 6]);
    expect(tok.enc.shape).toEqual([16, 6]);
    expect(chw.enc).toMatchObject({
      name: `onnx:${path.basename(file)}`,
      runtime: 'onnx',
      layer: 'grid',
      weights: file,
    });
    for (let i = 0; i < imgs.length; i++) {
      expect(chw.out[i].length).toBe(96);
      expect(chw.out[i].some((v) => v !== 0)).toBe(true);
      expect(Array.from(hwc.out[i])).toEqual(Array.from(chw.out[i]));
      expect(Array.from(tok.out[i])).toEqual(Array.from(chw.out[i]));
    }
    // the reordering of a chw grid is part of what computes the features
    expect(chw.enc.fingerprint).not.toBe(hwc.enc.fingerprint);
  });

  it('a vector [D]; a 1x1 grid [C, 1, 1] is cached as the same vector', async () => {
    const file = await modelFile({ outputs: ['pooled', 'pooled_1x1'] });
    const a = await encodeWith({ path: file, output: 'pooled' }, images(32));
    const b = await encodeWith({ path: file, output: 'pooled_1x1' }, images(32));
    expect(a.enc.shape).toEqual([6]);
    expect(b.enc.shape).toEqual([6]);
    a.out.forEach((v, i) => expect(Array.from(b.out[i])).toEqual(Array.from(v)));
  });

  it('an ambiguous grid ([4, 4, 4]) needs outputLayout, and follows it', async () => {
    const file = await modelFile({ channels: 4, outputs: ['grid'] });
    expect(await failure(encoderFor({ path: file }), ConfigError, file)).toMatch(
      /cannot tell which side of output "grid" \[4, 4, 4\] holds the channels; set encoder\.onnx\.outputLayout to chw/,
    );
    const chw = await encodeWith({ path: file, outputLayout: 'chw' }, images(32));
    const hwc = await encodeWith({ path: file, outputLayout: 'hwc' }, images(32));
    expect(chw.enc.shape).toEqual([4, 4, 4]);
    expect(Array.from(chw.out[0])).not.toEqual(Array.from(hwc.out[0])); // same numbers, other order
    expect([...chw.out[0]].sort()).toEqual([...hwc.out[0]].sort());
  });
});

describe('the input', () => {
  it('an NHWC model gets the same pixels as the NCHW one (layout read from the model)', async () => {
    const nchw = await encodeWith({ path: await modelFile({ outputs: ['pooled'] }) }, images(32));
    const nhwc = await encodeWith({ path: await modelFile({ outputs: ['pooled'], inputLayout: 'nhwc' }) }, images(32));
    expect(nchw.enc.preprocessing.layout).toBe('nchw');
    expect(nhwc.enc.preprocessing.layout).toBe('nhwc');
    nchw.out.forEach((v, i) => {
      for (let k = 0; k < v.length; k++) expect(nhwc.out[i][k]).toBeCloseTo(v[k], 5);
    });
  });

  it('a dynamic height and width take encoder.onnx.size, and the output follows', async () => {
    const file = await modelFile({ size: 'dynamic', channels: 5, outputs: ['grid'] });
    const m = await failure(encoderFor({ path: file }), ConfigError, file);
    expect(m).toMatch(
      /has a dynamic height and width, so the image size cannot be read from the model; set encoder\.onnx\.size/,
    );
    const e = await encodeWith({ path: file, size: 48 }, images(48));
    expect(e.enc.shape).toEqual([6, 6, 5]);
    expect(e.enc.preprocessing.size).toBe(48);
  });

  it('a batch of images gives what each image gives alone; a model with a fixed batch of 1 runs image by image', async () => {
    const imgs = images(32);
    const dyn = await encodeWith({ path: await modelFile({ outputs: ['tokens'] }) }, imgs);
    const one = await encodeWith({ path: await modelFile({ outputs: ['tokens'], batch: 1 }) }, imgs);
    for (let i = 0; i < imgs.length; i++) {
      const alone = await encodeWith({ path: await modelFile({ outputs: ['tokens'] }) }, [imgs[i]]);
      expect(Array.from(alone.out[0])).toEqual(Array.from(dyn.out[i]));
      expect(Array.from(one.out[i])).toEqual(Array.from(dyn.out[i]));
    }
  });

  it('records every preprocessing setting, resolved', async () => {
    const file = await modelFile({ outputs: ['pooled'] });
    const { enc } = await encodeWith(
      {
        path: file,
        resizeSize: 40,
        interpolation: 'bicubic',
        range: '0-255',
        mean: [1, 2, 3],
        std: [4, 5, 6],
        channelOrder: 'bgr',
      },
      [],
    );
    expect(enc.preprocessing).toEqual({
      size: 32,
      resize: 'shorter',
      resizeSize: 40,
      interpolation: 'bicubic',
      alpha: 'white',
      mode: 'normalise',
      scale: 1,
      mean: [1, 2, 3],
      std: [4, 5, 6],
      channelOrder: 'bgr',
      layout: 'nchw',
    });
    const s = await encodeWith({ path: file, resize: 'stretch' }, []);
    expect(s.enc.preprocessing).toMatchObject({
      resize: 'fill',
      scale: 1 / 255,
      interpolation: 'bilinear',
      mean: [0.485, 0.456, 0.406],
    });
    expect(s.enc.preprocessing.resizeSize).toBeUndefined();
  });
});

describe('the feature cache fingerprint', () => {
  it('changes with the model file content and with every preprocessing setting; not with where the file is', async () => {
    const file = await modelFile({ size: 'dynamic', outputs: ['pooled'] });
    const base = { path: file, size: 32 };
    const fp = async (onnx: Record<string, unknown>) =>
      cacheFingerprint({ encoder: (await encodeWith(onnx, [])).enc, dtype: 'float32' });
    const ref = await fp(base);
    const variants: Record<string, unknown>[] = [
      { size: 40 },
      { resize: 'stretch' },
      { resizeSize: 48 },
      { interpolation: 'nearest' },
      { range: '0-255' },
      { mean: [0.5, 0.5, 0.5] },
      { std: [0.5, 0.5, 0.5] },
      { channelOrder: 'bgr' },
    ];
    const seen = new Set([ref]);
    for (const v of variants) {
      const f = await fp({ ...base, ...v });
      expect(seen.has(f), JSON.stringify(v)).toBe(false);
      seen.add(f);
    }
    // another model in the same file name: other weights, other fingerprint
    const same = path.join(work, 'copy.onnx');
    await fs.copyFile(file, same);
    expect(await fp({ ...base, path: same })).toBe(ref);
    await fs.writeFile(same, testImageModel({ size: 'dynamic', outputs: ['pooled'], seed: 99 }));
    expect(await fp({ ...base, path: same })).not.toBe(ref);
  });
});

describe('a model with its weights in an external data file', () => {
  it('finds the file, runs like the same model with inline weights, and hashes the data file too', async () => {
    const opts: TestModelOptions = { outputs: ['pooled'], seed: 4 };
    const sub = path.join(work, 'external');
    await fs.mkdir(sub, { recursive: true });
    const { model, data } = testImageModelExternal(opts, 'weights.bin');
    expect(externalDataFiles(model)).toEqual(['weights.bin']);
    expect(externalDataFiles(testImageModel(opts))).toEqual([]);
    expect(externalDataFiles(new TextEncoder().encode('not a protobuf at all'))).toEqual([]);
    const file = path.join(sub, 'ext.onnx');
    await fs.writeFile(file, model);
    await fs.writeFile(path.join(sub, 'weights.bin'), data);
    const ext = await encodeWith({ path: file }, images(32));
    const inline = await encodeWith({ path: await modelFile(opts) }, images(32));
    ext.out.forEach((v, i) => expect(Array.from(v)).toEqual(Array.from(inline.out[i])));
    // other weights in the data file: another fingerprint, though the .onnx file is the same
    const changed = Float32Array.from(new Float32Array(data.buffer.slice(0)), (x) => x * 0.5);
    await fs.writeFile(path.join(sub, 'weights.bin'), new Uint8Array(changed.buffer));
    const other = await encodeWith({ path: file }, []);
    expect(other.enc.weightsFingerprint).not.toBe(ext.enc.weightsFingerprint);
    expect(other.enc.fingerprint).not.toBe(ext.enc.fingerprint);
    // a missing data file is named
    await fs.rm(path.join(sub, 'weights.bin'));
    expect(await failure(encoderFor({ path: file }), ModelError, file)).toMatch(
      /its weights are in the external data file "weights\.bin", which cannot be read \(no such file\); keep it next to the model file/,
    );
  });
});

describe('models it cannot use: a clear error naming the file and the fix', () => {
  it('a wrong input name', async () => {
    const file = await modelFile({ outputs: ['pooled'] });
    expect(await failure(encoderFor({ path: file, input: 'image' }), ConfigError, file)).toMatch(
      /has no input "image"; its inputs: "x" float32 \[N, 3, 32, 32\]\. Set encoder\.onnx\.input to one of these names/,
    );
  });

  it('several outputs and none named; a wrong output name', async () => {
    const file = await modelFile({ outputs: ['grid', 'pooled'] });
    expect(await failure(encoderFor({ path: file }), ConfigError, file)).toMatch(
      /has 2 outputs \("grid" float32 \[N, 6, 4, 4\], "pooled" float32 \[N, 6\]\); set encoder\.onnx\.output/,
    );
    expect(await failure(encoderFor({ path: file, output: 'logits' }), ConfigError, file)).toMatch(
      /has no output "logits"; its outputs: .*Set encoder\.onnx\.output/,
    );
  });

  it('a non-float output', async () => {
    const file = await modelFile({ outputs: ['argmax', 'pooled'] });
    expect(await failure(encoderFor({ path: file, output: 'argmax' }), ModelError, file)).toMatch(
      /output "argmax" int64 \[N, 4, 4\] is not float32; .*set encoder\.onnx\.output to a float32 output \("pooled"\)/,
    );
  });

  it('a non-float input', async () => {
    const file = await modelFile({ outputs: ['pooled'], inputType: 2 /* uint8 */ });
    expect(await failure(encoderFor({ path: file }), ModelError, file)).toMatch(
      /input "x" uint8 .* is not float32; .*export the model with a float32 image input/,
    );
  });

  it('an output of unsupported rank, even when its shape is only known by running the model', async () => {
    const file = await modelFile({ outputs: ['rank5'] });
    expect(await failure(encoderFor({ path: file }), ModelError, file)).toMatch(
      /output "rank5" has shape \[N, 1, 6, 4, 4\], 4 dimensions after the batch/,
    );
    const dyn = await modelFile({ size: 'dynamic', outputs: ['rank5'] });
    expect(await failure(encoderFor({ path: dyn, size: 32 }), ModelError, dyn)).toMatch(
      /output "rank5" has shape \[N, 1, 6, G, G\], 4 dimensions after the batch/,
    );
  });

  it('a second input the encoder cannot feed', async () => {
    const file = await modelFile({ outputs: ['pooled'], extraInput: true });
    expect(await failure(encoderFor({ path: file }), ModelError, file)).toMatch(
      /has 2 inputs \("x" float32 \[N, 3, 32, 32\], "scale" float32 \[1\]\), but an image encoder gets one image tensor only; export the image part/,
    );
  });

  it('a file that is not ONNX, an empty one, a folder, a missing one', async () => {
    const png = path.join(work, 'photo.onnx');
    await fs.writeFile(png, Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex'));
    expect(await failure(encoderFor({ path: png }), ModelError, png)).toMatch(
      /is not an ONNX model \(onnxruntime cannot parse it as one\)/,
    );
    const empty = path.join(work, 'empty.onnx');
    await fs.writeFile(empty, '');
    expect(await failure(encoderFor({ path: empty }), ModelError, empty)).toMatch(
      /is not an ONNX model \(the file is empty\)/,
    );
    expect(await failure(encoderFor({ path: work }), ModelError, work)).toMatch(/is a folder, not an ONNX model file/);
    const missing = path.join(work, 'missing.onnx');
    expect(await failure(encoderFor({ path: missing }), ModelError, missing)).toMatch(
      /no such file \(encoder\.onnx\.path/,
    );
  });

  it('a size or resizeSize that does not fit', async () => {
    const file = await modelFile({ outputs: ['pooled'] });
    expect(await failure(encoderFor({ path: file, size: 64 }), ConfigError, file)).toMatch(
      /takes 32x32 images, but encoder\.onnx\.size is 64; set it to 32/,
    );
    await expect(encoderFor({ path: file, resizeSize: 16 })).rejects.toThrow(
      /encoder\.onnx\.resizeSize: must be at least the image size 32/,
    );
    await expect(encoderFor({ path: file, resize: 'stretch', resizeSize: 40 })).rejects.toThrow(
      /encoder\.onnx\.resizeSize: applies to resize shorter only/,
    );
  });
});
