// How an ONNX model's input and output shapes are read (src/features/onnx/model.ts): pure, no onnxruntime.
import { describe, expect, it } from 'vitest';
import { ConfigError, ModelError } from '../../../src/errors.js';
import { applyPlan, planOutput, resolveInput, resolveOutput, shapeText } from '../../../src/features/onnx/model.js';
import type { TensorMeta } from '../../../src/features/onnx/runtime.js';

const F = 'models/m.onnx';
const t = (name: string, shape: (number | string)[], type = 'float32'): TensorMeta => ({ name, type, shape });
const auto = { layout: 'auto' as const };

/** The error `f` throws, checked to be of `type` and to name the model file. */
function error(f: () => unknown, type: typeof ConfigError | typeof ModelError): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(type);
    expect((e as Error).message.startsWith(`${F}: `), (e as Error).message).toBe(true);
    return (e as Error).message;
  }
  throw new Error('expected an error');
}

describe('shapeText', () => {
  it('shows symbolic dims by name and unnamed ones as ?', () => {
    expect(shapeText(['batch', 3, 224, 224])).toBe('[batch, 3, 224, 224]');
    expect(shapeText(['', 3, -1, 'W'])).toBe('[?, 3, ?, W]');
  });
});

describe('resolveInput', () => {
  it('reads the layout from the axis of 3 channels and the size from the model', () => {
    expect(resolveInput(F, [t('x', ['N', 3, 224, 224])], auto)).toEqual({
      name: 'x',
      layout: 'nchw',
      size: 224,
      fixedBatch: null,
    });
    expect(resolveInput(F, [t('img', [1, 299, 299, 3])], auto)).toEqual({
      name: 'img',
      layout: 'nhwc',
      size: 299,
      fixedBatch: 1,
    });
    // an explicit layout and a matching size are accepted
    expect(resolveInput(F, [t('x', ['N', 3, 224, 224])], { layout: 'nchw', size: 224, input: 'x' }).size).toBe(224);
  });

  it('takes the size from the config when the model leaves it dynamic, and refuses to guess it', () => {
    expect(resolveInput(F, [t('x', ['N', 3, 'H', 'W'])], { ...auto, size: 160 }).size).toBe(160);
    const m = error(() => resolveInput(F, [t('x', ['N', 3, 'H', 'W'])], auto), ConfigError);
    expect(m).toMatch(/input "x" float32 \[N, 3, H, W\] has a dynamic height and width.*set encoder\.onnx\.size/);
  });

  it('explains a size, a layout or a name that does not fit the model', () => {
    expect(error(() => resolveInput(F, [t('x', ['N', 3, 224, 224])], { ...auto, size: 256 }), ConfigError)).toMatch(
      /takes 224x224 images, but encoder\.onnx\.size is 256; set it to 224/,
    );
    expect(error(() => resolveInput(F, [t('x', ['N', 224, 224, 3])], { layout: 'nchw' }), ConfigError)).toMatch(
      /has 224 channels at the nchw channel axis, expected 3; set encoder\.onnx\.layout to nhwc/,
    );
    expect(error(() => resolveInput(F, [t('x', ['N', 'C', 'H', 'W'])], auto), ConfigError)).toMatch(
      /cannot tell the layout of input "x".*set encoder\.onnx\.layout to nchw/,
    );
    expect(
      error(() => resolveInput(F, [t('x', ['N', 3, 224, 224])], { ...auto, input: 'pixels' }), ConfigError),
    ).toMatch(/has no input "pixels"; its inputs: "x" float32 \[N, 3, 224, 224\]\. Set encoder\.onnx\.input/);
  });

  it('refuses inputs an image encoder cannot feed, saying how to export instead', () => {
    expect(error(() => resolveInput(F, [t('x', ['N', 3, 224, 224]), t('mask', ['N', 49])], auto), ModelError)).toMatch(
      /has 2 inputs \("x" .*"mask".*export the image part of the model alone/,
    );
    expect(error(() => resolveInput(F, [t('x', ['N', 3, 224, 224], 'uint8')], auto), ModelError)).toMatch(
      /input "x" uint8 .* is not float32/,
    );
    expect(error(() => resolveInput(F, [t('x', ['N', 150528])], auto), ModelError)).toMatch(
      /has 2 dimensions; an image input has 4/,
    );
    expect(error(() => resolveInput(F, [t('x', ['N', 3, 224, 320])], auto), ModelError)).toMatch(
      /takes 320x224 images, but captioner feeds square ones/,
    );
    expect(error(() => resolveInput(F, [t('x', [8, 3, 224, 224])], auto), ModelError)).toMatch(
      /fixed batch of 8; export it with a dynamic batch dimension/,
    );
    expect(error(() => resolveInput(F, [t('x', ['N', 4, 224, 5])], auto), ModelError)).toMatch(/no axis of 3 channels/);
  });
});

describe('resolveOutput', () => {
  const outs = [t('grid', ['N', 2048, 7, 7]), t('pooled', ['N', 2048]), t('label', ['N'], 'int64')];
  it('takes the only output, or the named one', () => {
    expect(resolveOutput(F, [outs[1]], undefined).name).toBe('pooled');
    expect(resolveOutput(F, outs, 'grid').name).toBe('grid');
  });
  it('lists the outputs when there are several and none is named', () => {
    expect(error(() => resolveOutput(F, outs, undefined), ConfigError)).toMatch(
      /has 3 outputs \("grid" float32 \[N, 2048, 7, 7\], "pooled" float32 \[N, 2048\], "label" int64 \[N\]\); set encoder\.onnx\.output/,
    );
  });
  it('refuses a non-float output, naming the float ones', () => {
    expect(error(() => resolveOutput(F, outs, 'label'), ModelError)).toMatch(
      /output "label" int64 \[N\] is not float32.*set encoder\.onnx\.output to a float32 output \("grid", "pooled"\)/,
    );
    expect(error(() => resolveOutput(F, [outs[2]], undefined), ModelError)).toMatch(
      /export the feature layer itself as a float32 output/,
    );
  });
  it('refuses an output of unsupported rank before running anything', () => {
    expect(error(() => resolveOutput(F, [t('y', ['N', 1, 512, 7, 7])], undefined), ModelError)).toMatch(
      /output "y" has shape \[N, 1, 512, 7, 7\], 4 dimensions after the batch; captioner caches a vector \[D\], tokens \[T, D\] or a grid/,
    );
  });
});

describe('planOutput', () => {
  it('reads vectors, tokens and grids from the per-image shape', () => {
    expect(planOutput(F, 'y', [2048], 'auto')).toMatchObject({ kind: 'vector', shape: [2048], transpose: false });
    expect(planOutput(F, 'y', [50, 768], 'auto')).toMatchObject({ kind: 'tokens', shape: [50, 768], transpose: false });
    expect(planOutput(F, 'y', [2048, 7, 7], 'auto')).toMatchObject({
      kind: 'grid',
      shape: [7, 7, 2048],
      layout: 'chw',
      transpose: true,
    });
    expect(planOutput(F, 'y', [14, 14, 512], 'auto')).toMatchObject({
      kind: 'grid',
      shape: [14, 14, 512],
      layout: 'hwc',
      transpose: false,
    });
  });
  it('caches a 1x1 grid or a single token as a vector', () => {
    expect(planOutput(F, 'y', [2048, 1, 1], 'auto')).toMatchObject({ kind: 'vector', shape: [2048], transpose: false });
    expect(planOutput(F, 'y', [1, 1, 512], 'auto')).toMatchObject({ kind: 'vector', shape: [512] });
    expect(planOutput(F, 'y', [1, 768], 'auto')).toMatchObject({ kind: 'vector', shape: [768] });
  });
  it('asks for outputLayout when the shape does not tell, and follows it when given', () => {
    for (const dims of [
      [4, 4, 4],
      [8, 6, 5],
    ])
      expect(error(() => planOutput(F, 'y', dims, 'auto'), ConfigError)).toMatch(
        /cannot tell which side of output "y" \[.*\] holds the channels; set encoder\.onnx\.outputLayout to chw/,
      );
    expect(planOutput(F, 'y', [4, 4, 4], 'hwc')).toMatchObject({ shape: [4, 4, 4], transpose: false });
    expect(planOutput(F, 'y', [8, 6, 5], 'chw')).toMatchObject({ shape: [6, 5, 8], transpose: true });
  });
  it('refuses other ranks', () => {
    expect(error(() => planOutput(F, 'y', [], 'auto'), ModelError)).toMatch(/no dimension after the batch/);
    expect(error(() => planOutput(F, 'y', [1, 2, 3, 4], 'auto'), ModelError)).toMatch(/4 dimensions after the batch/);
  });
});

describe('applyPlan', () => {
  it('reorders [C, H, W] to [H, W, C] and copies everything else', () => {
    const [C, H, W] = [2, 2, 3];
    const chw = Float32Array.from({ length: C * H * W }, (_, i) => i); // value = c * 6 + y * 3 + x
    const plan = planOutput(F, 'y', [C, H, W], 'chw');
    const hwc = applyPlan(plan, chw);
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++)
        for (let c = 0; c < C; c++) expect(hwc[(y * W + x) * C + c]).toBe(c * H * W + y * W + x);
    const v = Float32Array.from([1, 2, 3]);
    const copy = applyPlan(planOutput(F, 'y', [3], 'auto'), v);
    expect(copy).toEqual(v);
    expect(copy).not.toBe(v);
  });
});
