// What every image encoder is (ImageEncoder) and what it says about itself (EncoderInfo, Preprocessing):
// the feature cache manifest (src/features/cache/format.ts) and the run manifest record these, and
// src/features/encoder.ts builds the encoders. Types only.
import type { Interpolation } from './image.js';

/** How pixels become the encoder's input; part of the feature-cache fingerprint. */
export interface Preprocessing {
  /** Side of the square image the encoder gets. */
  size: number;
  /** fill: the whole image stretched to size x size (aspect ratio ignored, like Keras load_img); shorter: the
   *  shorter side resized to resizeSize, then the centre size x size crop (torchvision Resize + CenterCrop). */
  resize: 'fill' | 'shorter';
  /** resize shorter: the shorter side before the crop. */
  resizeSize?: number;
  interpolation: Interpolation;
  /** Alpha is flattened onto white. */
  alpha: 'white';
  /** 'caffe': RGB -> BGR minus ImageNet BGR means (Keras vgg16.preprocess_input); 'normalise': (x*scale - mean)/std per channel
   *  (scale 1/255 for a 0-1 range, 1 for 0-255). */
  mode: 'caffe' | 'normalise';
  mean: number[];
  std?: number[];
  scale?: number;
  channelOrder: 'rgb' | 'bgr';
  layout: 'nhwc' | 'nchw';
}

export interface EncoderInfo {
  /** 'vgg16', or 'onnx:<file name>' for a user model. */
  name: string;
  runtime: 'onnx' | 'tfjs';
  /** Output layer (vgg16) or output name (user ONNX). */
  layer: string;
  /** Per-image feature shape, e.g. [4096] or [14, 14, 512]. */
  shape: number[];
  /** What computes the features: encoder name, weights fingerprint and layer (not the runtime). */
  fingerprint: string;
  /** 'random', or the weights / model file that was read. */
  weights: string;
  /** `random:seed=N` or `sha256:<hex>` of the weights / model file. */
  weightsFingerprint: string;
  preprocessing: Preprocessing;
  /** One human line: runtime, version, threads, backend. */
  detail: string;
}

export interface ImageEncoder {
  info: EncoderInfo;
  inputSize: number;
  /** RGB images (inputSize*inputSize*3 bytes each) -> one Float32Array per image (length = product of info.shape). */
  encode(images: Uint8Array[]): Promise<Float32Array[]>;
  dispose(): Promise<void>;
}
