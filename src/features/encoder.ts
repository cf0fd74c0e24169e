// Image encoders behind one interface: RGB images in (already decoded to inputSize x inputSize by
// src/features/image.ts, see decodeFor), one feature vector (or grid, or tokens) per image out.
//  - vgg16 on onnxruntime (fast path: the graph is written by src/features/vgg16/onnx.ts from the weights),
//  - vgg16 on TensorFlow.js (src/features/vgg16/tfjs.ts, backend from src/tf/backend.ts),
//  - any user ONNX image encoder (encoder.type onnx, encoder.onnx.*: src/features/onnx/encoder.ts).
// runtime 'auto' takes onnxruntime when onnxruntime-node loads, else tfjs. Both runtimes give the same
// VGG16 features (up to float rounding), so the fingerprint does not depend on the runtime.
import { createHash } from 'node:crypto';
import type { EncoderConfig } from '../config/schema.js';
import { ConfigError, ModelError } from '../errors.js';
import { log } from '../log.js';
import type { BackendRequest } from '../tf/backend.js';
import { decodeImage } from './image.js';
import type { EncoderInfo, ImageEncoder } from './types.js';
import { createOnnxEncoder } from './onnx/encoder.js';
import { createSession, floatTensor, loadOrt, ortDetail, ortLoadError, type OrtSession } from './onnx/runtime.js';
import { ONNX_INPUT_NAME, vgg16Onnx } from './vgg16/onnx.js';
import { packVgg16 } from './vgg16/preprocess.js';
import { VGG16_BGR_MEAN, VGG16_INPUT, VGG16_OUTPUTS, type Vgg16Output } from './vgg16/spec.js';
import { loadVgg16Weights, type LoadedVgg16Weights } from './vgg16/weights.js';

export interface EncoderOptions {
  /** Threads for onnxruntime and the wasm backend (0: all cores). */
  threads: number;
  /** tfjs backend (config `backend`), used by the tfjs runtime. */
  backend?: BackendRequest;
  /** Already-loaded VGG16 weights (tests, benchmarks); skips loading encoder.weights. */
  weights?: LoadedVgg16Weights;
  /** Weights cache folder for encoder.weights auto (default: the `captioner weights` cache). */
  weightsCacheDir?: string;
}

/** Decode an image file or bytes the way `encoder` expects (size, resize and crop, interpolation). */
export function decodeFor(encoder: ImageEncoder, input: Uint8Array | string, maxPixels?: number): Promise<Uint8Array> {
  const pp = encoder.info.preprocessing;
  return decodeImage(input, {
    size: encoder.inputSize,
    interpolation: pp.interpolation,
    resize: pp.resize,
    resizeSize: pp.resizeSize,
    maxPixels,
  });
}

export async function createEncoder(cfg: EncoderConfig, opts: EncoderOptions): Promise<ImageEncoder> {
  if (cfg.type === 'onnx') return createOnnxEncoder(cfg, { threads: opts.threads });
  const runtime = await pickRuntime(cfg.runtime);
  const layer = cfg.layer as Vgg16Output;
  const loaded =
    opts.weights ??
    (await loadVgg16Weights(cfg.weights, {
      seed: cfg.seed,
      requireTop: layer === 'fc2',
      includeTop: layer === 'fc2',
      cacheDir: opts.weightsCacheDir,
    }));
  if (loaded.source === 'random') {
    log.warn(
      `encoder.weights is random (seed ${cfg.seed}): these VGG16 weights are UNTRAINED (not ImageNet): their features keep colour and layout, enough for the synthetic demo, but captions of real photos will be poor. ` +
        'Use this for demos and tests only; run `captioner weights vgg16` and set encoder.weights auto for real features.',
    );
  }
  const info: Omit<EncoderInfo, 'runtime' | 'detail'> = {
    name: 'vgg16',
    layer,
    shape: [...VGG16_OUTPUTS[layer]],
    fingerprint: sha256(JSON.stringify({ name: 'vgg16', weights: loaded.fingerprint, layer })),
    weights: loaded.source,
    weightsFingerprint: loaded.fingerprint,
    preprocessing: {
      size: VGG16_INPUT,
      resize: 'fill',
      interpolation: cfg.interpolation,
      alpha: 'white',
      mode: 'caffe',
      mean: [...VGG16_BGR_MEAN],
      channelOrder: 'bgr',
      layout: 'nhwc',
    },
  };
  // weights we loaded ourselves are dropped once the runtime holds its own copy (saves ~553 MB at peak)
  const release = opts.weights ? () => {} : () => loaded.weights.clear();
  return runtime === 'onnx' ? vgg16OnOnnx(info, loaded, opts, release) : vgg16OnTfjs(info, loaded, opts, release);
}

async function pickRuntime(want: EncoderConfig['runtime']): Promise<'onnx' | 'tfjs'> {
  if (want === 'tfjs') return 'tfjs';
  const ort = await loadOrt();
  if (ort) return 'onnx';
  if (want === 'onnx')
    throw new ConfigError(
      `encoder.runtime onnx: onnxruntime-node cannot be loaded here (${ortLoadError()}); use encoder.runtime auto or tfjs`,
    );
  log.info(`encoder: onnxruntime-node unavailable (${ortLoadError()}); using TensorFlow.js`);
  return 'tfjs';
}

/** Check decoded images before packing them: 224x224 RGB each. */
function checkVgg16Images(images: Uint8Array[]): void {
  const per = VGG16_INPUT * VGG16_INPUT * 3;
  images.forEach((img, i) => {
    if (img.length !== per)
      throw new ModelError(`encoder: image ${i} has ${img.length} bytes, expected ${per} (224x224 RGB)`);
  });
}

function split(data: Float32Array, n: number, per: number): Float32Array[] {
  if (data.length !== n * per)
    throw new ModelError(`encoder: output has ${data.length} values, expected ${n} x ${per}`);
  return Array.from({ length: n }, (_, i) => data.slice(i * per, (i + 1) * per));
}

async function vgg16OnOnnx(
  base: Omit<EncoderInfo, 'runtime' | 'detail'>,
  loaded: LoadedVgg16Weights,
  opts: EncoderOptions,
  release: () => void,
): Promise<ImageEncoder> {
  const ort = (await loadOrt())!;
  const bytes = vgg16Onnx(loaded.weights, base.layer);
  release();
  let session: OrtSession | null = await createSession(bytes, { threads: opts.threads });
  const per = base.shape.reduce((a, b) => a * b, 1);
  return {
    info: { ...base, runtime: 'onnx', detail: ortDetail(ort, opts.threads) },
    inputSize: VGG16_INPUT,
    async encode(images) {
      if (!session) throw new ModelError('encoder used after dispose()');
      if (!images.length) return [];
      checkVgg16Images(images);
      const x = await floatTensor(packVgg16(images), [images.length, VGG16_INPUT, VGG16_INPUT, 3]);
      const out = await session.run({ [ONNX_INPUT_NAME]: x });
      const y = out[base.layer];
      try {
        return split(y.data as Float32Array, images.length, per);
      } finally {
        y.dispose?.();
      }
    },
    async dispose() {
      const s = session;
      session = null;
      await s?.release();
    },
  };
}

async function vgg16OnTfjs(
  base: Omit<EncoderInfo, 'runtime' | 'detail'>,
  loaded: LoadedVgg16Weights,
  opts: EncoderOptions,
  release: () => void,
): Promise<ImageEncoder> {
  const { initBackend } = await import('../tf/backend.js');
  const { tf } = await import('../tf/tf.js');
  const { buildVgg16 } = await import('./vgg16/tfjs.js');
  const backend = await initBackend(opts.backend ?? 'auto', { threads: opts.threads, quiet: true });
  let model: ReturnType<typeof buildVgg16> | null = buildVgg16(loaded.weights, base.layer);
  release();
  const per = base.shape.reduce((a, b) => a * b, 1);
  return {
    info: { ...base, runtime: 'tfjs', detail: `TensorFlow.js ${tf.version_core}, backend ${backend.detail}` },
    inputSize: VGG16_INPUT,
    async encode(images) {
      if (!model) throw new ModelError('encoder used after dispose()');
      if (!images.length) return [];
      checkVgg16Images(images);
      const x = tf.tensor4d(packVgg16(images), [images.length, VGG16_INPUT, VGG16_INPUT, 3]); // [N, 224, 224, 3]
      try {
        const y = model.predict(x); // [N, ...shape]
        try {
          return split((await y.data()) as Float32Array, images.length, per);
        } finally {
          y.dispose();
        }
      } finally {
        x.dispose();
      }
    },
    async dispose() {
      model?.dispose();
      model = null;
    },
  };
}

function sha256(s: string): string {
  return `sha256:${createHash('sha256').update(s).digest('hex')}`;
}
