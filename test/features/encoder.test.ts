// Encoders: a user ONNX model with its preprocessing. VGG16 on onnxruntime vs TensorFlow.js is an
// end-to-end test: vgg16/runtimes.e2e.test.ts.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EncoderSchema } from '../../src/config/schema.js';
import { createEncoder } from '../../src/features/encoder.js';
import { createSession, floatTensor } from '../../src/features/onnx/runtime.js';
import { relMaxDiff, syntheticRgb, tinyEncoderOnnx } from './helpers.js';

let work: string;
beforeAll(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'cap-enc-'));
});
afterAll(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

describe('user ONNX encoder (encoder.type onnx)', () => {
  const S = 32;
  for (const layout of ['nchw', 'nhwc'] as const) {
    it(`applies range/mean/std/channel order in ${layout} and returns the model output`, async () => {
      const file = path.join(work, `tiny-${layout}.onnx`);
      await fs.writeFile(file, tinyEncoderOnnx({ size: S, layout }));
      const onnx = {
        path: file,
        layout,
        channelOrder: 'bgr' as const,
        range: '0-1' as const,
        mean: [0.1, 0.2, 0.3],
        std: [0.5, 0.25, 0.2],
        interpolation: 'bilinear' as const,
      };
      const enc = await createEncoder(EncoderSchema.parse({ type: 'onnx', onnx }), { threads: 1 });
      try {
        expect(enc.inputSize).toBe(S);
        expect(enc.info).toMatchObject({
          name: `onnx:tiny-${layout}.onnx`,
          runtime: 'onnx',
          layer: 'features',
          shape: [8],
        });
        expect(enc.info.preprocessing).toMatchObject({
          size: S,
          interpolation: 'bilinear',
          mode: 'normalise',
          channelOrder: 'bgr',
          layout,
        });
        const imgs = [syntheticRgb(1, S), syntheticRgb(2, S), syntheticRgb(3, S)];
        const got = await enc.encode(imgs);
        expect(got.length).toBe(3);
        // reference: preprocess by hand, run the raw session
        const raw = await createSession(file, { threads: 1 });
        try {
          for (let n = 0; n < 3; n++) {
            const x = new Float32Array(S * S * 3);
            for (let p = 0; p < S * S; p++)
              for (let c = 0; c < 3; c++) {
                const v = (imgs[n][p * 3 + (2 - c)] / 255 - onnx.mean[c]) / onnx.std[c]; // model channel c = BGR
                x[layout === 'nchw' ? c * S * S + p : p * 3 + c] = v;
              }
            const out = await raw.run({ x: await floatTensor(x, layout === 'nchw' ? [1, 3, S, S] : [1, S, S, 3]) });
            expect(relMaxDiff(got[n], out.features.data as Float32Array)).toBeLessThan(1e-5);
          }
        } finally {
          await raw.release();
        }
      } finally {
        await enc.dispose();
      }
    });
  }

  it('runs a model with a fixed batch of 1 image by image', async () => {
    const file = path.join(work, 'tiny-b1.onnx');
    await fs.writeFile(file, tinyEncoderOnnx({ size: 32, batch: 1 }));
    const dyn = path.join(work, 'tiny-dyn.onnx');
    await fs.writeFile(dyn, tinyEncoderOnnx({ size: 32 }));
    const a = await createEncoder(EncoderSchema.parse({ type: 'onnx', onnx: { path: file } }), { threads: 1 });
    const b = await createEncoder(EncoderSchema.parse({ type: 'onnx', onnx: { path: dyn } }), { threads: 1 });
    try {
      const imgs = [syntheticRgb(1, 32), syntheticRgb(2, 32), syntheticRgb(3, 32)];
      const [x, y] = [await a.encode(imgs), await b.encode(imgs)];
      expect(x.length).toBe(3);
      x.forEach((v, i) => expect(relMaxDiff(v, y[i])).toBeLessThan(1e-6));
    } finally {
      await a.dispose();
      await b.dispose();
    }
  });

  it('explains a missing model file, a bad input name and a size mismatch', async () => {
    await expect(
      createEncoder(EncoderSchema.parse({ type: 'onnx', onnx: { path: path.join(work, 'nope.onnx') } }), {
        threads: 1,
      }),
    ).rejects.toThrow(/nope\.onnx: no such file \(encoder\.onnx\.path/);
    const file = path.join(work, 'tiny.onnx');
    await fs.writeFile(file, tinyEncoderOnnx({ size: 32 }));
    await expect(
      createEncoder(EncoderSchema.parse({ type: 'onnx', onnx: { path: file, input: 'img' } }), { threads: 1 }),
    ).rejects.toThrow(/has no input "img"; its inputs: "x" float32 \[N, 3, 32, 32\]\. Set encoder\.onnx\.input/);
    await expect(
      createEncoder(EncoderSchema.parse({ type: 'onnx', onnx: { path: file, size: 64 } }), { threads: 1 }),
    ).rejects.toThrow(/takes 32x32 images, but encoder\.onnx\.size is 64; set it to 32/);
    await expect(
      createEncoder(EncoderSchema.parse({ type: 'onnx', runtime: 'tfjs', onnx: { path: file } }), { threads: 1 }),
    ).rejects.toThrow(/runs on onnxruntime only/);
    await fs.writeFile(path.join(work, 'junk.onnx'), 'not a model');
    await expect(
      createEncoder(EncoderSchema.parse({ type: 'onnx', onnx: { path: path.join(work, 'junk.onnx') } }), {
        threads: 1,
      }),
    ).rejects.toThrow(/junk\.onnx: is not an ONNX model/);
  });
});
