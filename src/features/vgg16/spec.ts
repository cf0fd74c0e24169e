// The VGG16 architecture exactly as Keras defines it (keras.applications.VGG16, include_top=True):
// layer names, kernel shapes (Keras HWIO layout: [kh, kw, in, out]; Dense: [in, out]) and the
// preprocessing constants. Shared by the tfjs model, the ONNX graph writer and the weight loaders.

export type Vgg16Layer =
  | { kind: 'conv'; name: string; inChannels: number; outChannels: number }
  | { kind: 'pool'; name: string }
  | { kind: 'flatten'; name: string }
  | { kind: 'dense'; name: string; inUnits: number; outUnits: number; activation: 'relu' | 'softmax' };

const conv = (name: string, inChannels: number, outChannels: number): Vgg16Layer => ({
  kind: 'conv',
  name,
  inChannels,
  outChannels,
});
const pool = (name: string): Vgg16Layer => ({ kind: 'pool', name });

/** In order, input 224x224x3 (channels last). Convs are 3x3, stride 1, same padding, relu; pools 2x2 stride 2. */
export const VGG16_LAYERS: Vgg16Layer[] = [
  conv('block1_conv1', 3, 64),
  conv('block1_conv2', 64, 64),
  pool('block1_pool'),
  conv('block2_conv1', 64, 128),
  conv('block2_conv2', 128, 128),
  pool('block2_pool'),
  conv('block3_conv1', 128, 256),
  conv('block3_conv2', 256, 256),
  conv('block3_conv3', 256, 256),
  pool('block3_pool'),
  conv('block4_conv1', 256, 512),
  conv('block4_conv2', 512, 512),
  conv('block4_conv3', 512, 512),
  pool('block4_pool'),
  conv('block5_conv1', 512, 512),
  conv('block5_conv2', 512, 512),
  conv('block5_conv3', 512, 512),
  pool('block5_pool'),
  { kind: 'flatten', name: 'flatten' },
  { kind: 'dense', name: 'fc1', inUnits: 25088, outUnits: 4096, activation: 'relu' },
  { kind: 'dense', name: 'fc2', inUnits: 4096, outUnits: 4096, activation: 'relu' },
  { kind: 'dense', name: 'predictions', inUnits: 4096, outUnits: 1000, activation: 'softmax' },
];

/** Parameter count with the top, as Keras reports it. */
export const VGG16_PARAMS_WITH_TOP = 138_357_544;
/** Parameter count without the top (include_top=False). */
export const VGG16_PARAMS_NO_TOP = 14_714_688;

export const VGG16_INPUT = 224;
/** keras.applications.vgg16.preprocess_input ('caffe' mode): RGB -> BGR, then subtract these BGR means. */
export const VGG16_BGR_MEAN = [103.939, 116.779, 123.68] as const;

/** One layer's weights, Keras layout: conv kernel [kh, kw, in, out], dense kernel [in, out]. */
export interface LayerWeights {
  kernel: Float32Array;
  kernelShape: number[];
  bias: Float32Array;
}
/** Weights by layer name; a no-top set has no fc1/fc2/predictions. */
export type Vgg16Weights = Map<string, LayerWeights>;

/** Output layers the feature cache may take, with their per-image shape. */
export const VGG16_OUTPUTS = {
  fc2: [4096],
  block5_conv3: [14, 14, 512],
  block5_pool: [7, 7, 512],
} as const;
export type Vgg16Output = keyof typeof VGG16_OUTPUTS;
