// keras.applications.vgg16.preprocess_input ('caffe' mode) on one decoded image: RGB -> BGR, then
// subtract the ImageNet BGR means. Pure; image decoding and resizing live in src/features/image.ts.
import { VGG16_BGR_MEAN, VGG16_INPUT } from './spec.js';

/** 224*224*3 RGB bytes (channels-last) -> 224*224*3 float32 BGR minus means (channels-last). */
export function preprocessVgg16(rgb: Uint8Array, out?: Float32Array): Float32Array {
  const n = VGG16_INPUT * VGG16_INPUT * 3;
  return preprocessBgrMean(rgb, n, out);
}

/** Same as preprocessVgg16 for any pixel count (rgb.length must equal `n`, a multiple of 3). */
export function preprocessBgrMean(rgb: Uint8Array, n = rgb.length, out: Float32Array = new Float32Array(n)): Float32Array {
  if (rgb.length !== n) throw new RangeError(`preprocessVgg16: expected ${n} RGB bytes, got ${rgb.length}`);
  if (out.length !== n) throw new RangeError(`preprocessVgg16: output must hold ${n} values, got ${out.length}`);
  const [mb, mg, mr] = VGG16_BGR_MEAN;
  for (let i = 0; i < n; i += 3) {
    out[i] = rgb[i + 2] - mb;
    out[i + 1] = rgb[i + 1] - mg;
    out[i + 2] = rgb[i] - mr;
  }
  return out;
}
