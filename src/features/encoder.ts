// Image encoders behind one interface: RGB images in (already decoded to inputSize x inputSize by
// src/features/image.ts), one feature vector (or grid) per image out.
//  - vgg16 on onnxruntime (fast path: the graph is written by src/features/vgg16/onnx.ts from the weights),
//  - vgg16 on TensorFlow.js (src/features/vgg16/tfjs.ts, backend from src/tf/backend.ts),
//  - any user ONNX image encoder (encoder.name onnx, encoder.onnx.*).
// runtime 'auto' takes onnxruntime when onnxruntime-node loads, else tfjs. Both runtimes give the same
// VGG16 features (up to float rounding), so the fingerprint does not depend on the runtime.
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { EncoderConfig } from '../config/schema.js';
import { ConfigError, ModelError } from '../errors.js';
import { log } from '../log.js';
import type { BackendRequest } from '../tf/backend.js';
import { decodeImage, type Interpolation } from './image.js';
import { createSession, floatTensor, loadOrt, ortLoadError, type OrtSession } from './onnx/runtime.js';
import { ONNX_INPUT_NAME, vgg16Onnx } from './vgg16/onnx.js';
import { preprocessVgg16 } from './vgg16/preprocess.js';
import { VGG16_BGR_MEAN, VGG16_INPUT, VGG16_OUTPUTS, type Vgg16Output } from './vgg16/spec.js';
import { loadVgg16Weights, type LoadedVgg16Weights } from './vgg16/weights.js';

/** How pixels become the encoder's input; part of the feature-cache fingerprint. */
export interface Preprocessing {
  /** Square side the image is resized to (aspect ratio ignored, like Keras load_img). */
  size: number;
  resize: 'fill';
  interpolation: Interpolation;
  /** Alpha is flattened onto white. */
  alpha: 'white';
  /** 'caffe': RGB -> BGR minus ImageNet BGR means (Keras vgg16.preprocess_input); 'normalise': (x*scale - mean)/std per channel. */
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

/** Decode an image file or bytes the way `encoder` expects (size and interpolation). */
export function decodeFor(encoder: ImageEncoder, input: Uint8Array | string, maxPixels?: number): Promise<Uint8Array> {
  return decodeImage(input, { size: encoder.inputSize, interpolation: encoder.info.preprocessing.interpolation, maxPixels });
}

export async function createEncoder(cfg: EncoderConfig, opts: EncoderOptions): Promise<ImageEncoder> {
  if (cfg.name === 'onnx') {
    if (cfg.runtime === 'tfjs') throw new ConfigError('encoder.runtime tfjs: a user ONNX encoder (encoder.name onnx) runs on onnxruntime only; set encoder.runtime to auto or onnx');
    return createUserOnnxEncoder(cfg, opts);
  }
  const runtime = await pickRuntime(cfg.runtime);
  const layer = cfg.layer as Vgg16Output;
  const loaded = opts.weights ?? (await loadVgg16Weights(cfg.weights, { seed: cfg.seed, requireTop: layer === 'fc2', includeTop: layer === 'fc2', cacheDir: opts.weightsCacheDir }));
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
    preprocessing: { size: VGG16_INPUT, resize: 'fill', interpolation: cfg.interpolation, alpha: 'white', mode: 'caffe', mean: [...VGG16_BGR_MEAN], channelOrder: 'bgr', layout: 'nhwc' },
  };
  // weights we loaded ourselves are dropped once the runtime holds its own copy (saves ~553 MB at peak)
  const release = opts.weights ? () => {} : () => loaded.weights.clear();
  return runtime === 'onnx' ? vgg16OnOnnx(info, loaded, opts, release) : vgg16OnTfjs(info, loaded, opts, release);
}

async function pickRuntime(want: EncoderConfig['runtime']): Promise<'onnx' | 'tfjs'> {
  if (want === 'tfjs') return 'tfjs';
  const ort = await loadOrt();
  if (ort) return 'onnx';
  if (want === 'onnx') throw new ConfigError(`encoder.runtime onnx: onnxruntime-node cannot be loaded here (${ortLoadError()}); use encoder.runtime auto or tfjs`);
  log.info(`encoder: onnxruntime-node unavailable (${ortLoadError()}); using TensorFlow.js`);
  return 'tfjs';
}

/** Pack preprocessed images into one NHWC batch. */
function packVgg16(images: Uint8Array[]): Float32Array {
  const per = VGG16_INPUT * VGG16_INPUT * 3;
  const batch = new Float32Array(per * images.length);
  images.forEach((img, i) => {
    if (img.length !== per) throw new ModelError(`encoder: image ${i} has ${img.length} bytes, expected ${per} (224x224 RGB)`);
    preprocessVgg16(img, batch.subarray(i * per, (i + 1) * per));
  });
  return batch;
}

function split(data: Float32Array, n: number, per: number): Float32Array[] {
  if (data.length !== n * per) throw new ModelError(`encoder: output has ${data.length} values, expected ${n} x ${per}`);
  return Array.from({ length: n }, (_, i) => data.slice(i * per, (i + 1) * per));
}

async function vgg16OnOnnx(base: Omit<EncoderInfo, 'runtime' | 'detail'>, loaded: LoadedVgg16Weights, opts: EncoderOptions, release: () => void): Promise<ImageEncoder> {
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

async function vgg16OnTfjs(base: Omit<EncoderInfo, 'runtime' | 'detail'>, loaded: LoadedVgg16Weights, opts: EncoderOptions, release: () => void): Promise<ImageEncoder> {
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

// ---------------------------------------------------------------------------------------------------
// User ONNX encoders

async function createUserOnnxEncoder(cfg: EncoderConfig, opts: EncoderOptions): Promise<ImageEncoder> {
  const o = cfg.onnx;
  if (!o) throw new ConfigError('encoder.name onnx needs encoder.onnx.path (and optionally inputSize, layout, channelOrder, scale, mean, std)');
  const file = path.resolve(o.path);
  let bytes: Buffer;
  try {
    bytes = await fs.readFile(file);
  } catch (e) {
    throw new ModelError(`${o.path}: cannot read the ONNX encoder (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const ort = await loadOrt();
  if (!ort) throw new ConfigError(`encoder.name onnx: onnxruntime-node cannot be loaded here (${ortLoadError()})`);
  let session: OrtSession | null = await createSession(bytes, { threads: opts.threads });
  const s0 = session;
  const inputName = o.inputName ?? s0.inputNames[0];
  const outputName = o.outputName ?? s0.outputNames[0];
  if (!s0.inputNames.includes(inputName)) throw new ConfigError(`encoder.onnx.inputName: ${o.path} has no input "${inputName}" (inputs: ${s0.inputNames.join(', ')})`);
  if (!s0.outputNames.includes(outputName)) throw new ConfigError(`encoder.onnx.outputName: ${o.path} has no output "${outputName}" (outputs: ${s0.outputNames.join(', ')})`);
  const size = o.inputSize;
  const inMeta = s0.inputMetadata[s0.inputNames.indexOf(inputName)];
  const fixedBatch = inMeta?.isTensor && typeof inMeta.shape[0] === 'number' && inMeta.shape[0] > 0 ? (inMeta.shape[0] as number) : 0;
  if (fixedBatch > 1) throw new ConfigError(`encoder.onnx: ${o.path} input "${inputName}" has a fixed batch of ${fixedBatch}; export it with a dynamic (or 1) batch dimension`);
  if (inMeta?.isTensor && inMeta.shape.length === 4) {
    const dims = inMeta.shape;
    const [c, h, w] = o.layout === 'nchw' ? [dims[1], dims[2], dims[3]] : [dims[3], dims[1], dims[2]];
    const bad = (d: number | string, want: number) => typeof d === 'number' && d > 0 && d !== want;
    if (bad(c, 3) || bad(h, size) || bad(w, size)) {
      throw new ConfigError(`encoder.onnx: ${o.path} input "${inputName}" is [${dims.join(', ')}], which does not match layout ${o.layout} with inputSize ${size} and 3 channels`);
    }
  }
  const preprocessing: Preprocessing = { size, resize: 'fill', interpolation: cfg.interpolation, alpha: 'white', mode: 'normalise', scale: o.scale, mean: [...o.mean], std: [...o.std], channelOrder: o.channelOrder, layout: o.layout };
  const pack = (images: Uint8Array[]): Float32Array => {
    const hw = size * size;
    const out = new Float32Array(hw * 3 * images.length);
    images.forEach((img, n) => {
      if (img.length !== hw * 3) throw new ModelError(`encoder: image ${n} has ${img.length} bytes, expected ${hw * 3} (${size}x${size} RGB)`);
      const base = n * hw * 3;
      for (let c = 0; c < 3; c++) {
        const src = o.channelOrder === 'rgb' ? c : 2 - c; // model channel c reads this RGB channel
        const k = o.scale / o.std[c];
        const b = o.mean[c] / o.std[c];
        if (o.layout === 'nchw') for (let p = 0; p < hw; p++) out[base + c * hw + p] = img[p * 3 + src] * k - b;
        else for (let p = 0; p < hw; p++) out[base + p * 3 + c] = img[p * 3 + src] * k - b;
      }
    });
    return out;
  };
  const dims = (n: number) => (o.layout === 'nchw' ? [n, 3, size, size] : [n, size, size, 3]);
  const runBatch = async (images: Uint8Array[]): Promise<{ data: Float32Array; dims: readonly number[] }> => {
    const out = await session!.run({ [inputName]: await floatTensor(pack(images), dims(images.length)) }, [outputName]);
    const y = out[outputName];
    if (y.type !== 'float32') throw new ModelError(`encoder.onnx: output "${outputName}" is ${y.type}, expected float32`);
    return { data: y.data as Float32Array, dims: y.dims };
  };
  // learn the feature shape from one blank image
  const probe = await runBatch([new Uint8Array(size * size * 3)]);
  const shape = probe.dims.slice(1).map(Number);
  const per = shape.reduce((a, b) => a * b, 1);
  const modelHash = createHash('sha256').update(bytes).digest('hex');
  return {
    info: {
      name: `onnx:${path.basename(file)}`,
      runtime: 'onnx',
      layer: outputName,
      shape,
      fingerprint: sha256(JSON.stringify({ name: 'onnx', model: modelHash, input: inputName, output: outputName })),
      weights: file,
      weightsFingerprint: `sha256:${modelHash}`,
      preprocessing,
      detail: ortDetail(ort, opts.threads),
    },
    inputSize: size,
    async encode(images) {
      if (!session) throw new ModelError('encoder used after dispose()');
      if (!images.length) return [];
      if (fixedBatch === 1 && images.length > 1) {
        const out: Float32Array[] = [];
        for (const img of images) out.push((await runBatch([img])).data.slice(0, per));
        return out;
      }
      return split((await runBatch(images)).data, images.length, per);
    },
    async dispose() {
      const s = session;
      session = null;
      await s?.release();
    },
  };
}

function ortDetail(ort: { env: { versions?: { node?: string } } }, threads: number): string {
  const version = ort.env.versions?.node ? ` ${ort.env.versions.node}` : '';
  return `onnxruntime-node${version} (cpu, ${threads > 0 ? `${threads} thread${threads === 1 ? '' : 's'}` : 'all cores'})`;
}

function sha256(s: string): string {
  return `sha256:${createHash('sha256').update(s).digest('hex')}`;
}
