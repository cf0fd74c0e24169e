// Decoded pixels -> an encoder's input tensor (pure: no I/O, no runtime). One routine for every encoder:
// VGG16's Keras 'caffe' preprocessing is the special case BGR, 0-255, minus the BGR means, std 1, NHWC;
// a user ONNX model gives its own order, range, mean/std and layout (src/features/onnx/encoder.ts).
// Images arrive as decoded by src/features/image.ts: RGB bytes, row-major, channels last.

/** How bytes 0..255 become the model's floats: x * scale, minus mean, divided by std (per model channel). */
export interface PixelNorm {
  layout: 'nhwc' | 'nchw';
  /** Channel order the model reads; model channel c takes RGB channel c (rgb) or 2 - c (bgr). */
  channelOrder: 'rgb' | 'bgr';
  /** Multiplier applied first: 1/255 for a 0-1 range, 1 for 0-255. */
  scale: number;
  /** Per model channel, in the scaled units. */
  mean: readonly number[];
  std: readonly number[];
}

/**
 * Pack images of `pixels` pixels each (RGB bytes, 3 * pixels long) into one float32 batch,
 * [N, H, W, 3] (nhwc) or [N, 3, H, W] (nchw) flattened, into `out` when given.
 */
export function packPixels(
  images: readonly Uint8Array[],
  pixels: number,
  norm: PixelNorm,
  out?: Float32Array,
): Float32Array {
  const per = pixels * 3;
  const batch = out ?? new Float32Array(per * images.length);
  if (batch.length !== per * images.length)
    throw new RangeError(`packPixels: output must hold ${per * images.length} values, got ${batch.length}`);
  images.forEach((img, n) => {
    if (img.length !== per)
      throw new RangeError(`packPixels: image ${n} has ${img.length} bytes, expected ${per} (${pixels} RGB pixels)`);
    const base = n * per;
    for (let c = 0; c < 3; c++) {
      const src = norm.channelOrder === 'rgb' ? c : 2 - c;
      // (x * scale - mean) / std as one multiply-add; with scale 1 and std 1 this is exactly x - mean
      const k = norm.scale / norm.std[c];
      const b = norm.mean[c] / norm.std[c];
      if (norm.layout === 'nchw')
        for (let p = 0, o = base + c * pixels; p < pixels; p++, o++) batch[o] = img[p * 3 + src] * k - b;
      else for (let p = 0, o = base + c; p < pixels; p++, o += 3) batch[o] = img[p * 3 + src] * k - b;
    }
  });
  return batch;
}
