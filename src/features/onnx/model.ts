// What an ONNX image model's input and output mean to captioner, from their names, element types and
// shapes (pure: no onnxruntime, no I/O; the session's metadata comes from runtime.ts sessionMeta).
//  - the input: which one (encoder.onnx.input, or the only one), its layout (nchw / nhwc, from the axis
//    with 3 channels unless configured) and its square side (the model's fixed size, or encoder.onnx.size);
//  - the output: which one (encoder.onnx.output, or the only one), and what its per-image shape is:
//      [D]                      a vector (merge),
//      [T, D]                   tokens (attention; a ViT's patch tokens),
//      [C, H, W] or [H, W, C]   a grid (attention), cached as [H, W, C] (positions row-major, channels last),
//    with a 1x1 grid or a single token cached as a vector. The grid's layout is encoder.onnx.outputLayout,
//    or read from the shape: the two equal sides are H and W (the encoder is fed square images).
// Every problem is an error that names the model file and says what to change.
import { ConfigError, ModelError } from '../../errors.js';
import type { TensorMeta } from './runtime.js';

export type Dim = number | string;

/** "[N, 3, 224, 224]"; unnamed dynamic dims show as "?". */
export function shapeText(shape: readonly Dim[]): string {
  return `[${shape.map((d) => (typeof d === 'number' && d >= 0 ? String(d) : d === '' || d === -1 ? '?' : String(d))).join(', ')}]`;
}

/** "x float32 [N, 3, 224, 224]" for messages. */
export function describeTensor(t: TensorMeta): string {
  return `"${t.name}" ${t.type} ${t.shape.length ? shapeText(t.shape) : '(shape not given)'}`;
}

const fixed = (d: Dim | undefined): d is number => typeof d === 'number' && d > 0;

/** The one input or output named `want` (or the only one): ConfigError listing them otherwise. */
export function pickTensor(
  file: string,
  list: readonly TensorMeta[],
  want: string | undefined,
  what: 'input' | 'output',
): TensorMeta {
  const key = `encoder.onnx.${what}`;
  const all = list.map(describeTensor).join(', ');
  if (want !== undefined) {
    const t = list.find((x) => x.name === want);
    if (!t)
      throw new ConfigError(
        `${file}: the model has no ${what} "${want}"; its ${what}s: ${all}. Set ${key} to one of these names`,
      );
    return t;
  }
  if (list.length === 1) return list[0];
  if (!list.length) throw new ModelError(`${file}: the model has no ${what}s`);
  throw new ConfigError(
    `${file}: the model has ${list.length} ${what}s (${all}); set ${key} to the name of the one to use`,
  );
}

export interface InputSettings {
  input?: string;
  layout: 'auto' | 'nchw' | 'nhwc';
  size?: number;
}

export interface ResolvedInput {
  name: string;
  layout: 'nchw' | 'nhwc';
  /** Side of the square images fed. */
  size: number;
  /** The model's fixed batch size (1), or null when the batch dimension is dynamic. */
  fixedBatch: 1 | null;
}

/** Which input gets the images, in which layout and at which size; errors name the file and the fix. */
export function resolveInput(file: string, inputs: readonly TensorMeta[], s: InputSettings): ResolvedInput {
  if (inputs.length > 1) {
    const named = s.input !== undefined ? pickTensor(file, inputs, s.input, 'input') : null;
    const others = inputs
      .filter((t) => t !== named)
      .map(describeTensor)
      .join(', ');
    throw new ModelError(
      `${file}: the model has ${inputs.length} inputs (${inputs.map(describeTensor).join(', ')}), but an image encoder gets one image tensor only` +
        (named ? ` (nothing could feed ${others})` : '') +
        '; export the image part of the model alone, with one input',
    );
  }
  const t = pickTensor(file, inputs, s.input, 'input');
  if (t.type !== 'float32') {
    throw new ModelError(
      `${file}: input ${describeTensor(t)} is not float32; captioner feeds float32 pixels, so export the model with a float32 image input (in PyTorch: model.float(), and a float dummy input to torch.onnx.export)`,
    );
  }
  const dims = t.shape;
  if (dims.length && dims.length !== 4) {
    throw new ModelError(
      `${file}: input ${describeTensor(t)} has ${dims.length} dimensions; an image input has 4: [N, 3, H, W] (nchw) or [N, H, W, 3] (nhwc)`,
    );
  }
  let layout: 'nchw' | 'nhwc';
  if (s.layout !== 'auto') {
    layout = s.layout;
    const c = dims.length ? (layout === 'nchw' ? dims[1] : dims[3]) : undefined;
    if (fixed(c) && c !== 3) {
      const other = layout === 'nchw' ? 'nhwc' : 'nchw';
      throw new ConfigError(
        `${file}: input ${describeTensor(t)} has ${c} channels at the ${layout} channel axis, expected 3; set encoder.onnx.layout to ${other} (or auto)`,
      );
    }
  } else {
    const first = dims[1] === 3;
    const last = dims[3] === 3;
    if (first !== last) layout = first ? 'nchw' : 'nhwc';
    else if (!first && fixed(dims[1]) && fixed(dims[3])) {
      throw new ModelError(
        `${file}: input ${describeTensor(t)} has no axis of 3 channels; captioner feeds RGB images: [N, 3, H, W] (nchw) or [N, H, W, 3] (nhwc)`,
      );
    } else {
      throw new ConfigError(
        `${file}: cannot tell the layout of input ${describeTensor(t)}; set encoder.onnx.layout to nchw ([N, 3, H, W], PyTorch) or nhwc ([N, H, W, 3], TensorFlow)`,
      );
    }
  }
  const [h, w] = layout === 'nchw' ? [dims[2], dims[3]] : [dims[1], dims[2]];
  if (fixed(h) && fixed(w) && h !== w) {
    throw new ModelError(
      `${file}: input ${describeTensor(t)} takes ${w}x${h} images, but captioner feeds square ones; export the model with a square input (or dynamic height and width, and set encoder.onnx.size)`,
    );
  }
  const modelSize = fixed(h) ? h : fixed(w) ? w : undefined;
  let size: number;
  if (modelSize !== undefined) {
    if (s.size !== undefined && s.size !== modelSize) {
      throw new ConfigError(
        `${file}: input ${describeTensor(t)} takes ${modelSize}x${modelSize} images, but encoder.onnx.size is ${s.size}; set it to ${modelSize} (or leave it out)`,
      );
    }
    size = modelSize;
  } else if (s.size !== undefined) size = s.size;
  else {
    throw new ConfigError(
      `${file}: input ${describeTensor(t)} has a dynamic height and width, so the image size cannot be read from the model; set encoder.onnx.size to the side the model was trained at (224 for torchvision ImageNet models and CLIP ViT-B/32)`,
    );
  }
  const b = dims[0];
  if (fixed(b) && b > 1) {
    throw new ModelError(
      `${file}: input ${describeTensor(t)} has a fixed batch of ${b}; export it with a dynamic batch dimension (torch.onnx.export(..., dynamic_axes={"${t.name}": {0: "batch"}})) or a batch of 1`,
    );
  }
  return { name: t.name, layout, size, fixedBatch: b === 1 ? 1 : null };
}

/** The output whose values are cached; its element type and (static) rank are checked here. */
export function resolveOutput(file: string, outputs: readonly TensorMeta[], want: string | undefined): TensorMeta {
  const t = pickTensor(file, outputs, want, 'output');
  if (t.type !== 'float32') {
    const others = outputs.filter((o) => o !== t && o.type === 'float32').map((o) => `"${o.name}"`);
    throw new ModelError(
      `${file}: output ${describeTensor(t)} is not float32; the features must be float32 values` +
        (others.length
          ? `: set encoder.onnx.output to a float32 output (${others.join(', ')})`
          : ': export the feature layer itself as a float32 output (in PyTorch: model.float())'),
    );
  }
  if (t.shape.length) checkRank(file, t.name, t.shape);
  return t;
}

function checkRank(file: string, name: string, shape: readonly Dim[]): void {
  const rank = shape.length - 1;
  if (rank < 1 || rank > 3) {
    throw new ModelError(
      `${file}: output "${name}" has shape ${shapeText(shape)}, ${rank < 1 ? 'no dimension' : `${rank} dimensions`} after the batch; captioner caches a vector [D], tokens [T, D] or a grid [C, H, W] / [H, W, C]: ` +
        'set encoder.onnx.output to such an output, or export one (e.g. flatten or squeeze the extra dimensions)',
    );
  }
}

/** How one image's output values become what the cache stores. */
export interface OutputPlan {
  kind: 'vector' | 'tokens' | 'grid';
  /** Per-image shape the model gives (after the batch). */
  modelShape: number[];
  /** Per-image shape cached: [D], [T, D] or [H, W, C]. */
  shape: number[];
  /** The grid layout the model gives (grids only). */
  layout?: 'chw' | 'hwc';
  /** Values must be reordered [C, H, W] -> [H, W, C]. */
  transpose: boolean;
}

/** What an output of per-image shape `dims` (actual sizes) is, and how it is cached. */
export function planOutput(
  file: string,
  name: string,
  dims: readonly number[],
  outputLayout: 'auto' | 'chw' | 'hwc',
): OutputPlan {
  checkRank(file, name, ['N', ...dims]);
  const modelShape = [...dims];
  if (dims.length === 1) return { kind: 'vector', modelShape, shape: [dims[0]], transpose: false };
  if (dims.length === 2) {
    if (dims[0] === 1) return { kind: 'vector', modelShape, shape: [dims[1]], transpose: false };
    return { kind: 'tokens', modelShape, shape: [dims[0], dims[1]], transpose: false };
  }
  const [a, b, c] = dims;
  let layout: 'chw' | 'hwc';
  if (outputLayout !== 'auto') layout = outputLayout;
  else if (b === c && a !== b) layout = 'chw';
  else if (a === b && b !== c) layout = 'hwc';
  else {
    throw new ConfigError(
      `${file}: cannot tell which side of output "${name}" ${shapeText(dims)} holds the channels; set encoder.onnx.outputLayout to chw ([C, H, W], PyTorch) or hwc ([H, W, C], TensorFlow)`,
    );
  }
  const [C, H, W] = layout === 'chw' ? [a, b, c] : [c, a, b];
  if (H * W === 1) return { kind: 'vector', modelShape, shape: [C], layout, transpose: false };
  return { kind: 'grid', modelShape, shape: [H, W, C], layout, transpose: layout === 'chw' };
}

/** One image's output values (modelShape) -> the cached values (shape): a copy, reordered for chw grids. */
export function applyPlan(plan: OutputPlan, values: Float32Array): Float32Array {
  if (!plan.transpose) return values.slice();
  const [C, H, W] = plan.modelShape;
  const out = new Float32Array(values.length);
  const P = H * W;
  for (let c = 0; c < C; c++) for (let p = 0, i = c * P; p < P; p++, i++) out[p * C + c] = values[i];
  return out;
}
