// Loading a trained run folder as a Captioner: the decoder weights and vocabulary (src/model/runfolder.ts) plus
// the SAME image encoder the training features were computed with, rebuilt from what the run records:
// manifest.json `features.encoder` (name, layer, weights file and fingerprint, preprocessing) and
// config.yaml (encoder runtime choice, user ONNX input name, decode defaults). The rebuilt encoder must
// have the recorded fingerprint, weights fingerprint, layer, preprocessing and feature shape; anything
// else (weights file replaced, other layer) is a ModelError, since the decoder would read features it was
// never trained on.
//
// Besides the Captioner contract (captionBatch on encoded image bytes, used by serve), the result exposes
// the three stages separately (prepare, encode, captionFeatures) so the caption command can overlap them.
// With decodeWorkers > 1 (caption's decode.workers), captionFeatures decodes in a worker pool
// (src/decode/pool.ts) and encode and captionFeatures take turns (one runs at a time, each on every core).
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { DecodeSchema, EncoderSchema, type Config, type DecodeConfig, type EncoderConfig } from '../config/schema.js';
import { ModelError } from '../errors.js';
import { log } from '../log.js';
import { createEncoder, decodeFor } from '../features/encoder.js';
import type { EncoderInfo, ImageEncoder, Preprocessing } from '../features/types.js';
import { formatList, ImageError, DEFAULT_MAX_PIXELS, readableFormats, unreadableFormat } from '../features/image.js';
import type { LoadedVgg16Weights } from '../features/vgg16/weights.js';
import { loadTrainedModel, readRunConfig, type TrainedModel } from '../model/runfolder.js';
import { attentionGridOf } from '../view/attention-map.js';
import { sniffImage } from '../util/imagetype.js';
import { initBackend, type BackendInfo, type BackendRequest } from '../tf/backend.js';
import type { DecodedCaption } from '../decode/decode.js';
import { resolveDecodeWorkers, startDecoder, type BatchDecoder } from '../decode/pool.js';
import type { CaptionOptions, CaptionOutcome, Captioner, ImageInput } from './types.js';

export interface LoadCaptionerOptions {
  /** The resolved config of this invocation: backend, threads, decode.*, caption.maxPixels/batchSize. */
  config?: Config;
  /** tfjs backend (overrides config.backend; default auto). */
  backend?: BackendRequest;
  /** Threads for onnxruntime / wasm (overrides config.threads; default 0 = all cores). */
  threads?: number;
  /** Default beam size (overrides decode.beam). */
  beam?: number;
  /** Encoder runtime override (default: the run's encoder.runtime choice, usually auto). */
  runtime?: 'auto' | 'onnx' | 'tfjs';
  /** Which checkpoint: best (default) or last. */
  which?: 'best' | 'last';
  /** VGG16 weights already in memory (benchmarks, tests); still checked against the recorded fingerprint. */
  vgg16Weights?: LoadedVgg16Weights;
  /** Where encoder.weights auto looks (default: the `captioner weights` cache). */
  weightsCacheDir?: string;
  /**
   * Decoding threads (decode.workers: auto | N; default 1, the main thread: serve and library callers). With
   * more than 1, the encoder and the decoding workers take turns (one runs at a time), so onnxruntime's
   * threads and the workers never compete for the cores.
   */
  decodeWorkers?: number | 'auto';
  /** Images that will be captioned, when known: no more decoding workers than their decode batches. */
  images?: number;
  /** Abort: the decoding workers are terminated and the calls in flight reject with an AbortError. */
  signal?: AbortSignal;
}

/** The encoder as recorded in the model manifest (copied from the feature cache manifest). */
export interface RecordedEncoder {
  name: string;
  fingerprint: string;
  runtime?: string;
  detail?: string;
  weights: string;
  weightsFingerprint: string;
  layer: string;
  preprocessing: Preprocessing;
}

export interface LoadedCaptioner extends Captioner {
  readonly runDir: string;
  readonly model: TrainedModel;
  readonly encoder: ImageEncoder;
  readonly backend: BackendInfo;
  /** Effective decode settings (beam is the default for calls that give none). */
  readonly decode: DecodeConfig;
  readonly maxPixels: number;
  /** Decoding worker threads (1: decoding on the main thread; more: they take turns with the encoder). */
  readonly decodeWorkers: number;
  /** The attention grid [H, W] of an attention model (from the recorded feature shape [H, W, C]); null otherwise. */
  readonly attentionGrid: [number, number] | null;
  /** Encoded image bytes -> the encoder's input pixels. Throws ImageError (kinds: unsupported, corrupt, too_large). */
  prepare(bytes: Uint8Array): Promise<Uint8Array>;
  encode(images: Uint8Array[]): Promise<Float32Array[]>;
  captionFeatures(features: Float32Array[], options?: CaptionOptions): Promise<DecodedCaption[]>;
}

function sortKeys(o: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

function recordedEncoder(model: TrainedModel): RecordedEncoder {
  const where = path.join(model.dir, 'manifest.json');
  const e = model.manifest.features?.encoder as Partial<RecordedEncoder> | undefined;
  if (
    !e ||
    typeof e !== 'object' ||
    typeof e.name !== 'string' ||
    typeof e.fingerprint !== 'string' ||
    typeof e.layer !== 'string' ||
    !e.preprocessing ||
    typeof e.weightsFingerprint !== 'string'
  ) {
    throw new ModelError(
      `${where}: features.encoder does not say which image encoder the model was trained with (name, fingerprint, layer, weights, preprocessing); retrain with this version of captioner`,
    );
  }
  return e as RecordedEncoder;
}

async function fileExists(p: string): Promise<boolean> {
  try {
    await fs.access(p);
    return true;
  } catch {
    return false;
  }
}

/** A run's encoder settings (its config.yaml) with the keys older versions wrote renamed to today's. */
export function currentEncoderKeys(raw: unknown): Record<string, unknown> {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return {};
  const { name, ...e } = raw as Record<string, unknown>;
  if (name !== undefined && e.type === undefined) e.type = name;
  const o = e.onnx;
  if (o && typeof o === 'object' && !Array.isArray(o)) {
    const { inputSize, inputName, outputName, scale: _scale, ...rest } = o as Record<string, unknown>;
    e.onnx = {
      ...rest,
      ...(inputSize !== undefined ? { size: inputSize } : {}),
      ...(inputName !== undefined ? { input: inputName } : {}),
      ...(outputName !== undefined ? { output: outputName } : {}),
    };
  }
  return e;
}

/** The encoder config that rebuilds the recorded encoder (pure apart from checking that files exist). */
export async function encoderConfigFor(
  rec: RecordedEncoder,
  runEncoder: Partial<EncoderConfig>,
  runtime?: 'auto' | 'onnx' | 'tfjs',
): Promise<EncoderConfig> {
  const pp = rec.preprocessing;
  if (rec.name === 'vgg16') {
    const seed = /^random:seed=(\d+)$/.exec(rec.weightsFingerprint)?.[1];
    let weights: string;
    if (rec.weights === 'random') weights = 'random';
    else if (await fileExists(rec.weights)) weights = rec.weights;
    else if (runEncoder.weights === 'auto')
      weights = 'auto'; // another machine: look in this one's weights cache
    else weights = rec.weights; // reported as missing by the loader
    return EncoderSchema.parse({
      type: 'vgg16',
      runtime: runtime ?? runEncoder.runtime ?? 'auto',
      weights,
      layer: rec.layer,
      interpolation: pp.interpolation,
      seed: seed !== undefined ? Number(seed) : (runEncoder.seed ?? 1234),
    });
  }
  if (rec.name.startsWith('onnx:')) {
    const file = (await fileExists(rec.weights)) ? rec.weights : (runEncoder.onnx?.path ?? rec.weights);
    const range = pp.scale === 1 / 255 ? '0-1' : pp.scale === 1 ? '0-255' : null;
    if (!range)
      throw new ModelError(
        `the model was trained on ONNX features of pixels scaled by ${pp.scale}, which this version cannot reproduce (encoder.onnx.range is 0-1 or 0-255); compute the features and train again`,
      );
    const ro = runEncoder.onnx;
    return EncoderSchema.parse({
      type: 'onnx',
      runtime: 'auto',
      onnx: {
        path: file,
        size: pp.size,
        resize: pp.resize === 'shorter' ? 'shorter' : 'stretch',
        ...(pp.resize === 'shorter' ? { resizeSize: pp.resizeSize ?? pp.size } : {}),
        interpolation: pp.interpolation,
        range,
        mean: pp.mean,
        std: pp.std,
        channelOrder: pp.channelOrder,
        layout: pp.layout,
        ...(ro?.input ? { input: ro.input } : {}),
        output: rec.layer,
        outputLayout: ro?.outputLayout ?? 'auto',
      },
    });
  }
  throw new ModelError(`the model was trained on features of an unknown encoder "${rec.name}"`);
}

/** Why the encoder built now cannot stand in for the recorded one, or null when it is the same. */
export function encoderMismatch(rec: RecordedEncoder, now: EncoderInfo, shape?: number[]): string | null {
  const diffs: string[] = [];
  if (rec.name !== now.name) diffs.push(`encoder ${now.name}, trained with ${rec.name}`);
  if (rec.weightsFingerprint !== now.weightsFingerprint) {
    diffs.push(
      `weights ${now.weights} have fingerprint ${now.weightsFingerprint.slice(0, 19)}…, the model was trained on features of ${rec.weights} with ${rec.weightsFingerprint.slice(0, 19)}…`,
    );
  }
  if (rec.layer !== now.layer) diffs.push(`layer ${now.layer}, trained with ${rec.layer}`);
  if (!sameJson(sortKeys(rec.preprocessing), sortKeys(now.preprocessing)))
    diffs.push(`preprocessing ${JSON.stringify(now.preprocessing)}, trained with ${JSON.stringify(rec.preprocessing)}`);
  if (shape && shape.join('x') !== now.shape.join('x'))
    diffs.push(`features of shape [${now.shape}], trained with [${shape}]`);
  if (!diffs.length && rec.fingerprint !== now.fingerprint)
    diffs.push(`encoder fingerprint ${now.fingerprint.slice(0, 19)}…, trained with ${rec.fingerprint.slice(0, 19)}…`);
  return diffs.length ? diffs.join('; ') : null;
}

/** Bytes -> pixels for `encoder`, sniffing the content first so non-images get a clear reason. */
export async function preparePixels(bytes: Uint8Array, encoder: ImageEncoder, maxPixels: number): Promise<Uint8Array> {
  if (bytes.length === 0) throw new ImageError('corrupt', 'empty file (0 bytes)');
  const format = sniffImage(bytes);
  if (!format)
    throw new ImageError('unsupported', `not an image: the content is not ${formatList(await readableFormats())}`);
  const unreadable = await unreadableFormat(format);
  if (unreadable) throw unreadable;
  return decodeFor(encoder, bytes, maxPixels);
}

export async function loadCaptioner(runDir: string, opts: LoadCaptionerOptions = {}): Promise<LoadedCaptioner> {
  const cfg = opts.config;
  const runConfig = await readRunConfig(runDir);
  const backend = await initBackend(opts.backend ?? cfg?.backend ?? 'auto', {
    threads: opts.threads ?? cfg?.threads ?? 0,
    quiet: true,
  });
  const model = await loadTrainedModel(runDir, opts.which ?? 'best');
  let encoder: ImageEncoder | null = null;
  try {
    const rec = recordedEncoder(model);
    const runEncoder = (EncoderSchema.partial().safeParse(currentEncoderKeys(runConfig.encoder)).data ??
      {}) as Partial<EncoderConfig>;
    const encCfg = await encoderConfigFor(rec, runEncoder, opts.runtime);
    encoder = await createEncoder(encCfg, {
      threads: opts.threads ?? cfg?.threads ?? 0,
      backend: opts.backend ?? cfg?.backend ?? 'auto',
      weights: opts.vgg16Weights,
      weightsCacheDir: opts.weightsCacheDir,
    });
    const shape = Array.isArray(model.manifest.features?.shape) ? model.manifest.features.shape : undefined;
    const why = encoderMismatch(rec, encoder.info, shape);
    if (why)
      throw new ModelError(
        `${runDir}: the image encoder available now is not the one this model was trained with: ${why}. Restore the original weights (or retrain on features of these).`,
      );
    const dim = encoder.info.shape.reduce((a, b) => a * b, 1);
    const want = model.decoder.featureShape.reduce((a, b) => a * b, 1);
    if (dim !== want)
      throw new ModelError(
        `${runDir}: the encoder gives ${dim} values per image, the ${model.decoder.type} decoder expects ${want} ([${model.decoder.featureShape.join(', ')}])`,
      );
  } catch (e) {
    await encoder?.dispose();
    model.decoder.dispose();
    throw e;
  }
  const enc = encoder;
  const runDecode = DecodeSchema.safeParse(runConfig.decode ?? {}).data ?? DecodeSchema.parse({});
  const decode: DecodeConfig = {
    ...(cfg?.decode ?? runDecode),
    ...(opts.beam !== undefined ? { beam: opts.beam } : {}),
  };
  const maxPixels = cfg?.caption.maxPixels ?? DEFAULT_MAX_PIXELS;
  const encodeBatch = cfg?.caption.batchSize ?? 8;
  if (enc.info.weights === 'random')
    log.warn(
      `${runDir}: this model was trained on features of an UNTRAINED (random-weight) VGG16; its captions are for demos and tests only`,
    );

  let pool: BatchDecoder;
  try {
    const workers = resolveDecodeWorkers(opts.decodeWorkers ?? 1, {
      backend: backend.name,
      ...(opts.images !== undefined ? { batches: Math.ceil(opts.images / decode.batchSize) } : {}),
    });
    pool = await startDecoder(model, { workers, signal: opts.signal, mainBackend: backend.detail.split(' (')[0] });
  } catch (e) {
    await enc.dispose();
    model.decoder.dispose();
    throw e;
  }
  // with decoding workers, the encoder and the decoder take turns: each uses every core while it runs
  const turn = pool.workers > 1 ? turns() : <T>(f: () => Promise<T>) => f();
  const encode = (images: Uint8Array[]): Promise<Float32Array[]> =>
    turn(async () => {
      const out: Float32Array[] = [];
      for (let i = 0; i < images.length; i += encodeBatch)
        out.push(...(await enc.encode(images.slice(i, i + encodeBatch))));
      return out;
    });
  const attentionGrid = attentionGridOf(model.manifest);
  const captionFeatures = (features: Float32Array[], options: CaptionOptions = {}) =>
    turn(() =>
      pool.decode(features, {
        ...decode,
        beam: options.beam ?? decode.beam,
        ...(options.attention ? { attention: true } : {}),
      }),
    );
  let disposed = false;

  return {
    runDir,
    model,
    encoder: enc,
    backend,
    decode,
    decodeWorkers: pool.workers,
    maxPixels,
    attentionGrid,
    info: {
      name: model.manifest.name ?? path.basename(runDir),
      encoder: `${enc.info.name} ${enc.info.layer}, ${enc.info.detail}`,
      backend: backend.detail,
    },
    prepare: (bytes) => preparePixels(bytes, enc, maxPixels),
    encode,
    captionFeatures,
    async captionBatch(inputs: ImageInput[], options: CaptionOptions = {}): Promise<CaptionOutcome[]> {
      const pixels = await Promise.all(
        inputs.map((inp) =>
          preparePixels(inp.bytes, enc, maxPixels).then(
            (p) => ({ ok: true as const, p }),
            (e: unknown) => {
              if (e instanceof ImageError) return { ok: false as const, error: e.reason, kind: e.kind };
              throw e;
            },
          ),
        ),
      );
      const good = pixels.flatMap((p) => (p.ok ? [p.p] : []));
      // an attention model always says where it looked (the serve page shows it)
      const grid = attentionGrid;
      const captions = good.length
        ? await captionFeatures(await encode(good), { ...options, attention: grid !== null })
        : [];
      let k = 0;
      return pixels.map((p): CaptionOutcome => {
        if (!p.ok) return { ok: false, error: p.error, kind: p.kind };
        const c = captions[k++];
        const attention =
          grid && c.attention ? { grid, words: c.words, rows: c.attention.map((r) => Array.from(r)) } : undefined;
        return {
          ok: true,
          caption: c.caption,
          tokens: c.words,
          logprob: c.logprob,
          ...(attention ? { attention } : {}),
        };
      });
    },
    async dispose() {
      if (disposed) return;
      disposed = true;
      await pool.dispose();
      await enc.dispose();
      model.decoder.dispose();
    },
  };
}

/** Runs the functions given to it one at a time, in call order (a failure does not block the next). */
function turns(): <T>(f: () => Promise<T>) => Promise<T> {
  let last: Promise<unknown> = Promise.resolve();
  return <T>(f: () => Promise<T>) => {
    const mine = last.then(f, f);
    last = mine.catch(() => {});
    return mine;
  };
}
