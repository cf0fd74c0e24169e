// Rebuilding a run's image encoder from what the run records (src/caption/load.ts encoderConfigFor):
// run folders written by earlier versions (encoder.name, encoder.onnx.inputSize / inputName / scale, a
// stretched resize) still rebuild the encoder they were trained with.
import { describe, expect, it } from 'vitest';
import { currentEncoderKeys, encoderConfigFor, type RecordedEncoder } from '../../src/caption/load.js';
import { EncoderSchema } from '../../src/config/schema.js';

const pp = {
  size: 32,
  resize: 'fill' as const,
  interpolation: 'nearest' as const,
  alpha: 'white' as const,
  mode: 'normalise' as const,
  scale: 1 / 255,
  mean: [0.485, 0.456, 0.406],
  std: [0.229, 0.224, 0.225],
  channelOrder: 'rgb' as const,
  layout: 'nchw' as const,
};
const rec = (over: Partial<RecordedEncoder> = {}): RecordedEncoder => ({
  name: 'onnx:enc.onnx',
  fingerprint: 'sha256:f',
  weights: '/nowhere/enc.onnx',
  weightsFingerprint: 'sha256:w',
  layer: 'features',
  preprocessing: pp,
  ...over,
});

describe('a run recorded by an earlier version', () => {
  it('has its old encoder keys renamed', () => {
    expect(currentEncoderKeys({ name: 'vgg16', weights: 'auto', layer: 'fc2' })).toEqual({
      type: 'vgg16',
      weights: 'auto',
      layer: 'fc2',
    });
    const e = currentEncoderKeys({
      name: 'onnx',
      interpolation: 'nearest',
      onnx: { path: 'm.onnx', inputSize: 32, inputName: 'x', outputName: 'features', scale: 1 / 255, layout: 'nchw' },
    });
    expect(e).toEqual({
      type: 'onnx',
      interpolation: 'nearest',
      onnx: { path: 'm.onnx', size: 32, input: 'x', output: 'features', layout: 'nchw' },
    });
    expect(EncoderSchema.partial().safeParse(e).success).toBe(true);
    expect(currentEncoderKeys(null)).toEqual({});
  });

  it('rebuilds an ONNX encoder with a stretched resize and a 0-1 range from the recorded preprocessing', async () => {
    const cfg = await encoderConfigFor(rec(), {
      onnx: EncoderSchema.shape.onnx.unwrap().parse({ path: 'm.onnx', input: 'x' }),
    });
    expect(cfg).toMatchObject({
      type: 'onnx',
      onnx: {
        path: 'm.onnx',
        input: 'x',
        output: 'features',
        size: 32,
        resize: 'stretch',
        interpolation: 'nearest',
        range: '0-1',
        layout: 'nchw',
        outputLayout: 'auto',
      },
    });
    expect(cfg.onnx!.resizeSize).toBeUndefined();
  });

  it('rebuilds a shorter-side crop, a 0-255 range and the recorded grid layout; refuses a scale it cannot express', async () => {
    const cfg = await encoderConfigFor(rec({ preprocessing: { ...pp, resize: 'shorter', resizeSize: 40, scale: 1 } }), {
      onnx: EncoderSchema.shape.onnx.unwrap().parse({ path: 'm.onnx', outputLayout: 'hwc' }),
    });
    expect(cfg.onnx).toMatchObject({ resize: 'shorter', resizeSize: 40, range: '0-255', outputLayout: 'hwc' });
    await expect(encoderConfigFor(rec({ preprocessing: { ...pp, scale: 0.5 } }), {})).rejects.toThrow(
      /pixels scaled by 0\.5, which this version cannot reproduce/,
    );
  });
});
