// Writes Keras VGG16 (same Vgg16Weights as the tfjs model) as an ONNX graph, so onnxruntime can run it.
//
// Graph contract (identical to the tfjs model's):
//   input  "input"  float32 [N, 224, 224, 3]  NHWC, already preprocessed (preprocessVgg16: BGR minus means)
//   output "<layer>" float32 [N, 4096] for fc2, [N, 14, 14, 512] for block5_conv3, [N, 7, 7, 512] for block5_pool
// Inside: a Transpose to NCHW, Conv(3x3, pad 1)+Relu / MaxPool(2x2, stride 2) blocks; spatial outputs are
// transposed back to NHWC. For fc2 the pooled map goes back to NHWC before Flatten, so Keras's flatten
// order is kept and the Keras Dense kernels [in, out] are used as Gemm B unchanged. Conv kernels are
// converted from Keras HWIO [kh, kw, in, out] to ONNX OIHW [out, in, kh, kw]. The batch dim is dynamic.
import { VGG16_INPUT, VGG16_LAYERS, type LayerWeights, type Vgg16Output, type Vgg16Weights } from './spec.js';
import {
  DataType,
  float32Bytes,
  int64Tensor,
  model,
  node,
  tensor,
  valueInfo,
  type LazyBytes,
  type Message,
} from '../onnx/proto.js';
import { ModelError } from '../../errors.js';

export const ONNX_INPUT_NAME = 'input';

/** Layers run to produce `output` (in order, spec entries). */
function layersUpTo(output: string) {
  const idx = VGG16_LAYERS.findIndex((l) => l.name === output);
  if (idx < 0) throw new ModelError(`VGG16 has no layer ${output}`);
  return VGG16_LAYERS.slice(0, idx + 1);
}

/** Keras HWIO conv kernel -> ONNX OIHW, written straight into the output buffer in little-endian float32. */
export function hwioToOihw(w: LayerWeights, name: string): { dims: number[]; bytes: LazyBytes } {
  const [kh, kw, ci, co] = w.kernelShape;
  if (w.kernelShape.length !== 4 || w.kernel.length !== kh * kw * ci * co)
    throw new ModelError(`${name}: kernel shape [${w.kernelShape}] does not match ${w.kernel.length} values`);
  const src = w.kernel;
  return {
    dims: [co, ci, kh, kw],
    bytes: {
      length: src.length * 4,
      write(target, offset) {
        // one output channel at a time through a small scratch array (no whole-kernel copy)
        const per = ci * kh * kw;
        const scratch = new Float32Array(per);
        const bytes = new Uint8Array(scratch.buffer);
        for (let o = 0; o < co; o++) {
          let k = 0;
          for (let i = 0; i < ci; i++)
            for (let y = 0; y < kh; y++)
              for (let x = 0; x < kw; x++) scratch[k++] = src[((y * kw + x) * ci + i) * co + o];
          writeLE(target, offset + o * per * 4, scratch, bytes);
        }
      },
    },
  };
}

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
function writeLE(target: Uint8Array, offset: number, values: Float32Array, bytes: Uint8Array): void {
  if (littleEndian) target.set(bytes, offset);
  else {
    const dv = new DataView(target.buffer, target.byteOffset + offset, values.length * 4);
    for (let i = 0; i < values.length; i++) dv.setFloat32(i * 4, values[i], true);
  }
}

function get(weights: Vgg16Weights, name: string): LayerWeights {
  const w = weights.get(name);
  if (!w)
    throw new ModelError(
      `VGG16 weights have no layer ${name}${name.startsWith('fc') ? ' (a no-top weights file cannot give fc2; use layer block5_conv3 or block5_pool)' : ''}`,
    );
  return w;
}

/**
 * The ONNX model message for VGG16 up to `output` (encode with `.encode()`). `output` is normally a
 * Vgg16Output; any other conv/pool/dense layer name works too (tests use block1_conv1).
 */
export function vgg16OnnxModel(weights: Vgg16Weights, output: Vgg16Output | string = 'fc2'): Message {
  const nodes: Message[] = [];
  const inits: Message[] = [];
  let cur = 'nchw_input';
  nodes.push(node('Transpose', [ONNX_INPUT_NAME], [cur], 'to_nchw', { perm: [0, 3, 1, 2] }));
  let outDims: (number | string)[] = [];
  let side = VGG16_INPUT;
  let channels = 3;
  for (const layer of layersUpTo(output)) {
    const last = layer.name === output;
    if (layer.kind === 'conv') {
      const w = get(weights, layer.name);
      const { dims, bytes } = hwioToOihw(w, layer.name);
      if (dims[0] !== layer.outChannels || dims[1] !== layer.inChannels)
        throw new ModelError(
          `${layer.name}: kernel [${w.kernelShape}] does not match VGG16 (${layer.inChannels} -> ${layer.outChannels})`,
        );
      inits.push(tensor(`${layer.name}/kernel`, dims, DataType.FLOAT, bytes));
      inits.push(tensor(`${layer.name}/bias`, [w.bias.length], DataType.FLOAT, float32Bytes(w.bias)));
      nodes.push(
        node(
          'Conv',
          [cur, `${layer.name}/kernel`, `${layer.name}/bias`],
          [`${layer.name}/conv`],
          `${layer.name}/Conv`,
          { kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [1, 1] },
        ),
      );
      nodes.push(node('Relu', [`${layer.name}/conv`], [`${layer.name}/nchw`], `${layer.name}/Relu`));
      cur = `${layer.name}/nchw`;
      channels = layer.outChannels;
    } else if (layer.kind === 'pool') {
      nodes.push(
        node('MaxPool', [cur], [`${layer.name}/nchw`], `${layer.name}/MaxPool`, {
          kernel_shape: [2, 2],
          strides: [2, 2],
        }),
      );
      cur = `${layer.name}/nchw`;
      side /= 2;
    } else if (layer.kind === 'flatten') {
      nodes.push(node('Transpose', [cur], ['flatten/nhwc'], 'flatten/to_nhwc', { perm: [0, 2, 3, 1] }));
      inits.push(int64Tensor('flatten/shape', [2], [0, -1]));
      nodes.push(node('Reshape', ['flatten/nhwc', 'flatten/shape'], ['flatten'], 'flatten/Reshape'));
      cur = 'flatten';
    } else {
      const w = get(weights, layer.name);
      if (w.kernelShape.length !== 2 || w.kernelShape[0] !== layer.inUnits || w.kernelShape[1] !== layer.outUnits)
        throw new ModelError(
          `${layer.name}: kernel [${w.kernelShape}] does not match VGG16 [${layer.inUnits}, ${layer.outUnits}]`,
        );
      inits.push(
        tensor(`${layer.name}/kernel`, [layer.inUnits, layer.outUnits], DataType.FLOAT, float32Bytes(w.kernel)),
      );
      inits.push(tensor(`${layer.name}/bias`, [layer.outUnits], DataType.FLOAT, float32Bytes(w.bias)));
      const act = layer.activation === 'relu' ? 'Relu' : 'Softmax';
      nodes.push(
        node('Gemm', [cur, `${layer.name}/kernel`, `${layer.name}/bias`], [`${layer.name}/gemm`], `${layer.name}/Gemm`),
      );
      nodes.push(node(act, [`${layer.name}/gemm`], [last ? layer.name : `${layer.name}/act`], `${layer.name}/${act}`));
      cur = last ? layer.name : `${layer.name}/act`;
      if (last) outDims = ['N', layer.outUnits];
    }
    if (last && (layer.kind === 'conv' || layer.kind === 'pool')) {
      nodes.push(node('Transpose', [cur], [output], `${output}/to_nhwc`, { perm: [0, 2, 3, 1] }));
      outDims = ['N', side, side, channels];
    } else if (last && layer.kind === 'flatten')
      throw new ModelError('VGG16 output must be a conv, pool or dense layer');
  }
  return model(
    {
      name: `vgg16_${output}`,
      nodes,
      initializers: inits,
      inputs: [valueInfo(ONNX_INPUT_NAME, DataType.FLOAT, ['N', VGG16_INPUT, VGG16_INPUT, 3])],
      outputs: [valueInfo(output, DataType.FLOAT, outDims)],
    },
    { doc: `Keras VGG16 up to ${output}; input NHWC preprocessed (caffe mode: BGR minus ImageNet means)` },
  );
}

/** Encoded ONNX bytes for VGG16 up to `output` (one buffer the size of the weights used). */
export function vgg16Onnx(weights: Vgg16Weights, output: Vgg16Output | string = 'fc2'): Uint8Array {
  return vgg16OnnxModel(weights, output).encode();
}
