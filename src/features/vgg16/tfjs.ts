// VGG16 as a TensorFlow.js function (no tf.layers model): weights become constant tensors, and
// predict() runs fused conv2d+bias+relu, 2x2 max pools, flatten and fused dense layers up to the
// requested output. Layer names and math follow keras.applications.VGG16 (channels-last).
import { tf } from '../../tf/tf.js';
import type { Tensor } from '../../tf/tf.js';
import { ModelError } from '../../errors.js';
import { VGG16_LAYERS, type Vgg16Layer, type Vgg16Output, type Vgg16Weights } from './spec.js';
import { checkWeights } from './weights.js';

export interface Vgg16Model {
  /** [N, 224, 224, 3] preprocessed (preprocessVgg16) -> fc2 [N, 4096] | block5_conv3 [N, 14, 14, 512] | block5_pool [N, 7, 7, 512]. */
  predict(batch: tf.Tensor4D): Tensor;
  /** Frees the weight tensors. */
  dispose(): void;
  /** Parameters the model holds: those of the layers up to the output (fc2: 134,260,544; block5_*: 14,714,688). */
  paramCount: number;
  output: string;
}

type Step =
  | { kind: 'conv'; name: string; kernel: tf.Tensor4D; bias: tf.Tensor1D }
  | { kind: 'pool'; name: string }
  | { kind: 'flatten'; name: string }
  | { kind: 'dense'; name: string; kernel: tf.Tensor2D; bias: tf.Tensor1D; activation: 'relu' | 'softmax' };

/**
 * Build VGG16 up to `output` from Keras-layout weights. `layers` is for reduced test specs (any
 * layer name of the spec is then a valid output).
 */
export function buildVgg16(
  weights: Vgg16Weights,
  output: Vgg16Output | (string & {}),
  opts: { layers?: readonly Vgg16Layer[] } = {},
): Vgg16Model {
  const layers = opts.layers ?? VGG16_LAYERS;
  const end = layers.findIndex((l) => l.name === output);
  if (end < 0) throw new ModelError(`VGG16 has no layer ${output}; outputs: fc2, block5_conv3, block5_pool`);
  const { includeTop } = checkWeights(weights, 'VGG16 weights', layers);
  const used = layers.slice(0, end + 1);
  if (!includeTop && used.some((l) => l.kind === 'dense')) {
    throw new ModelError(
      `VGG16 output ${output} needs the dense layers, but the weights are a no-top set; use block5_conv3 or block5_pool, or the full weights`,
    );
  }
  const steps: Step[] = [];
  let paramCount = 0;
  try {
    for (const l of used) {
      if (l.kind === 'conv' || l.kind === 'dense') {
        const w = weights.get(l.name)!;
        paramCount += w.kernel.length + w.bias.length;
        const bias = tf.tensor1d(w.bias, 'float32');
        if (l.kind === 'conv')
          steps.push({
            kind: 'conv',
            name: l.name,
            kernel: tf.tensor4d(w.kernel, w.kernelShape as [number, number, number, number], 'float32'),
            bias,
          });
        else
          steps.push({
            kind: 'dense',
            name: l.name,
            kernel: tf.tensor2d(w.kernel, w.kernelShape as [number, number], 'float32'),
            bias,
            activation: l.activation,
          });
      } else steps.push({ kind: l.kind, name: l.name });
    }
  } catch (e) {
    disposeSteps(steps);
    throw e;
  }
  let disposed = false;
  return {
    paramCount,
    output,
    predict(batch: tf.Tensor4D): Tensor {
      if (disposed) throw new ModelError('VGG16 model used after dispose()');
      if (batch.rank !== 4 || batch.shape[3] !== 3)
        throw new ModelError(`VGG16 input must be [N, H, W, 3], got [${batch.shape.join(', ')}]`);
      return tf.tidy(() => {
        let x: Tensor = batch.dtype === 'float32' ? batch : batch.toFloat();
        for (const s of steps) {
          if (s.kind === 'conv') {
            // [N, H, W, in] -> [N, H, W, out], 3x3 stride 1 same padding, relu
            x = tf.fused.conv2d({
              x: x as tf.Tensor4D,
              filter: s.kernel,
              strides: 1,
              pad: 'same',
              bias: s.bias,
              activation: 'relu',
            });
          } else if (s.kind === 'pool') {
            // [N, H, W, C] -> [N, H/2, W/2, C]
            x = tf.maxPool(x as tf.Tensor4D, 2, 2, 'valid');
          } else if (s.kind === 'flatten') {
            // [N, 7, 7, 512] -> [N, 25088], channels-last order as Keras Flatten
            x = tf.reshape(x, [x.shape[0], -1]);
          } else if (s.activation === 'relu') {
            x = tf.fused.matMul({ a: x as tf.Tensor2D, b: s.kernel, bias: s.bias, activation: 'relu' });
          } else {
            x = tf.softmax(tf.fused.matMul({ a: x as tf.Tensor2D, b: s.kernel, bias: s.bias }));
          }
        }
        return x;
      });
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      disposeSteps(steps);
    },
  };
}

function disposeSteps(steps: Step[]): void {
  for (const s of steps) if (s.kind === 'conv' || s.kind === 'dense') tf.dispose([s.kernel, s.bias]);
}
