// Small ONNX image models for the tests, written with the project's protobuf writer (no Python, no
// downloads). One seeded trunk, two 3x3 convolutions with ReLU and a max-pool:
//   x [N, 3, S, S] (or [N, S, S, 3] with inputLayout nhwc) -> conv -> relu -> conv -> relu -> maxpool -> [N, C, G, G]
// and any of these outputs on top of it (several at once: a multi-output model):
//   grid        [N, C, G, G]      (PyTorch layout)
//   grid_hwc    [N, G, G, C]      (TensorFlow layout)
//   tokens      [N, G*G, C]       (positions as tokens, like a ViT's patch tokens)
//   pooled      [N, C]            (global average pool: a vector)
//   pooled_1x1  [N, C, 1, 1]      (the pool without Flatten: a 1x1 grid)
//   argmax      int64 [N, G, G]   (not float: unusable as features)
//   rank5       [N, 1, C, G, G]   (one dimension too many)
// The same seed gives the same trunk whatever the outputs and the input layout, so the grid, grid_hwc
// and tokens outputs hold the same numbers in different orders.
import { DataType, floatTensor, int64Tensor, Message, model, node, valueInfo } from '../../src/features/onnx/proto.js';
import { rng } from '../../src/util/random.js';

export type TestOutput = 'grid' | 'grid_hwc' | 'tokens' | 'pooled' | 'pooled_1x1' | 'argmax' | 'rank5';

export interface TestModelOptions {
  /** Input side S, or 'dynamic' (symbolic height and width; the pool is then 8x8, so G = S / 8). Default 32. */
  size?: number | 'dynamic';
  /** Output grid side G (default 4; S must be a multiple). */
  grid?: number;
  /** Channels C (default 6). */
  channels?: number;
  inputLayout?: 'nchw' | 'nhwc';
  outputs?: TestOutput[];
  /** Batch dimension of the input and outputs (default 'N', dynamic). */
  batch?: number | string;
  /** A second input (a model an image encoder cannot feed). */
  extraInput?: boolean;
  /** Element type of the image input (default float). */
  inputType?: number;
  seed?: number;
}

/** The ONNX bytes of a small image model (see the file header). */
export function testImageModel(opts: TestModelOptions = {}): Uint8Array {
  return build(opts).model;
}

/**
 * The same model with its convolution weights in an external data file named `location` (as exporters
 * write models over 2 GB): write `model` as the .onnx file and `data` as `location` next to it.
 */
export function testImageModelExternal(
  opts: TestModelOptions,
  location: string,
): { model: Uint8Array; data: Uint8Array } {
  const r = build(opts, location);
  return { model: r.model, data: r.data! };
}

function build(opts: TestModelOptions, location?: string): { model: Uint8Array; data?: Uint8Array } {
  const chunks: Uint8Array[] = [];
  let offset = 0;
  /** A float initializer, inline or (with `location`) in the external data file. */
  const weights = (name: string, dims: number[], data: Float32Array): Message => {
    if (!location) return floatTensor(name, dims, data);
    const bytes = new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
    const entry = (k: string, v: string) => new Message().string(1, k).string(2, v);
    const t = new Message().packed(1, dims).varint(2, DataType.FLOAT).string(8, name);
    t.message(13, entry('location', location))
      .message(13, entry('offset', String(offset)))
      .message(13, entry('length', String(bytes.length)));
    t.varint(14, 1); // data_location: EXTERNAL
    chunks.push(bytes);
    offset += bytes.length;
    return t;
  };
  const C = opts.channels ?? 6;
  const G = opts.grid ?? 4;
  const dynamic = opts.size === 'dynamic';
  const S = dynamic ? 'S' : (opts.size ?? 32);
  const k = dynamic ? 8 : (S as number) / G;
  if (!Number.isInteger(k)) throw new Error(`testImageModel: size ${S} is not a multiple of grid ${G}`);
  const g: number | string = dynamic ? 'G' : G;
  const B = opts.batch ?? 'N';
  const r = rng(opts.seed ?? 11);
  const w = (n: number, lim: number) => Float32Array.from({ length: n }, () => (r() * 2 - 1) * lim);
  const nhwc = opts.inputLayout === 'nhwc';
  const nodes: Message[] = [];
  const inits: Message[] = [
    weights('w0', [C, 3, 3, 3], w(C * 27, 0.5)),
    floatTensor('b0', [C], w(C, 0.1)),
    weights('w1', [C, C, 3, 3], w(C * C * 9, Math.sqrt(6 / (9 * C)))),
    floatTensor('b1', [C], w(C, 0.1)),
  ];
  let trunk = 'x';
  if (opts.inputType !== undefined && opts.inputType !== DataType.FLOAT) {
    nodes.push(node('Cast', [trunk], ['x_float'], 'to_float', { to: DataType.FLOAT }));
    trunk = 'x_float';
  }
  if (nhwc) {
    nodes.push(node('Transpose', [trunk], ['x_nchw'], 'to_nchw', { perm: [0, 3, 1, 2] }));
    trunk = 'x_nchw';
  }
  if (opts.extraInput) {
    nodes.push(node('Mul', [trunk, 'scale'], ['x_scaled'], 'use_scale')); // so the model really needs it
    trunk = 'x_scaled';
  }
  nodes.push(
    node('Conv', [trunk, 'w0', 'b0'], ['c0'], 'conv0', { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }),
    node('Relu', ['c0'], ['r0'], 'relu0'),
    node('Conv', ['r0', 'w1', 'b1'], ['c1'], 'conv1', { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }),
    node('Relu', ['c1'], ['r1'], 'relu1'),
    node('MaxPool', ['r1'], ['feat'], 'pool', { kernel_shape: [k, k], strides: [k, k] }),
  );
  const outs: Message[] = [];
  const T: number | string = dynamic ? 'T' : G * G;
  for (const o of opts.outputs ?? ['grid']) {
    switch (o) {
      case 'grid':
        nodes.push(node('Identity', ['feat'], ['grid'], 'grid'));
        outs.push(valueInfo('grid', DataType.FLOAT, [B, C, g, g]));
        break;
      case 'grid_hwc':
        nodes.push(node('Transpose', ['feat'], ['grid_hwc'], 'to_hwc', { perm: [0, 2, 3, 1] }));
        outs.push(valueInfo('grid_hwc', DataType.FLOAT, [B, g, g, C]));
        break;
      case 'tokens':
        inits.push(int64Tensor('tokens/shape', [3], [0, C, -1]));
        nodes.push(
          node('Reshape', ['feat', 'tokens/shape'], ['tokens/chp'], 'tokens/reshape'),
          node('Transpose', ['tokens/chp'], ['tokens'], 'tokens/transpose', { perm: [0, 2, 1] }),
        );
        outs.push(valueInfo('tokens', DataType.FLOAT, [B, T, C]));
        break;
      case 'pooled':
        nodes.push(
          node('GlobalAveragePool', ['r1'], ['gap'], 'gap'),
          node('Flatten', ['gap'], ['pooled'], 'flatten', { axis: 1 }),
        );
        outs.push(valueInfo('pooled', DataType.FLOAT, [B, C]));
        break;
      case 'pooled_1x1':
        nodes.push(node('GlobalAveragePool', ['r1'], ['pooled_1x1'], 'gap_1x1'));
        outs.push(valueInfo('pooled_1x1', DataType.FLOAT, [B, C, 1, 1]));
        break;
      case 'argmax':
        nodes.push(node('ArgMax', ['feat'], ['argmax'], 'argmax', { axis: 1, keepdims: 0 }));
        outs.push(valueInfo('argmax', DataType.INT64, [B, g, g]));
        break;
      case 'rank5':
        inits.push(int64Tensor('rank5/shape', [5], [0, 1, C, 0, -1])); // 0 copies the input's dim, -1 is inferred
        nodes.push(node('Reshape', ['feat', 'rank5/shape'], ['rank5'], 'rank5'));
        outs.push(valueInfo('rank5', DataType.FLOAT, [B, 1, C, g, g]));
        break;
    }
  }
  const inputs = [valueInfo('x', opts.inputType ?? DataType.FLOAT, nhwc ? [B, S, S, 3] : [B, 3, S, S])];
  if (opts.extraInput) inputs.push(valueInfo('scale', DataType.FLOAT, [1]));
  const bytes = model({ name: 'test-image-model', nodes, initializers: inits, inputs, outputs: outs }).encode();
  if (!location) return { model: bytes };
  const data = new Uint8Array(offset);
  let at = 0;
  for (const c of chunks) {
    data.set(c, at);
    at += c.length;
  }
  return { model: bytes, data };
}
