// keras.applications.vgg16.preprocess_input ('caffe' mode) on decoded images: RGB -> BGR, then
// subtract the ImageNet BGR means, channels last. The arithmetic is the one pixel routine every encoder
// uses (src/features/pixels.ts); image decoding and resizing live in src/features/image.ts.
import { packPixels, type PixelNorm } from '../pixels.js';
import { VGG16_BGR_MEAN, VGG16_INPUT } from './spec.js';

/** VGG16's input: BGR, 0-255, minus the BGR means, no std, NHWC. */
export const VGG16_NORM: PixelNorm = {
  layout: 'nhwc',
  channelOrder: 'bgr',
  scale: 1,
  mean: VGG16_BGR_MEAN,
  std: [1, 1, 1],
};

/** 224*224*3 RGB bytes (channels-last) -> 224*224*3 float32 BGR minus means (channels-last). */
export function preprocessVgg16(rgb: Uint8Array, out?: Float32Array): Float32Array {
  const n = VGG16_INPUT * VGG16_INPUT * 3;
  return preprocessBgrMean(rgb, n, out);
}

/** Same as preprocessVgg16 for any pixel count (rgb.length must equal `n`, a multiple of 3). */
export function preprocessBgrMean(
  rgb: Uint8Array,
  n = rgb.length,
  out: Float32Array = new Float32Array(n),
): Float32Array {
  if (rgb.length !== n || n % 3 !== 0)
    throw new RangeError(`preprocessVgg16: expected ${n} RGB bytes, got ${rgb.length}`);
  if (out.length !== n) throw new RangeError(`preprocessVgg16: output must hold ${n} values, got ${out.length}`);
  return packPixels([rgb], n / 3, VGG16_NORM, out);
}

/** A batch of 224x224 RGB images -> one NHWC float32 batch [N, 224, 224, 3], preprocessed. */
export function packVgg16(images: readonly Uint8Array[]): Float32Array {
  return packPixels(images, VGG16_INPUT * VGG16_INPUT, VGG16_NORM);
}
