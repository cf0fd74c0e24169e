// The user's ONNX image encoder (encoder.type onnx): any ONNX model with one float32 image input, run on
// onnxruntime through the same session wrapper as VGG16 (runtime.ts) and fed by the same pixel routine
// (src/features/pixels.ts) from the same decoder (src/features/image.ts, resize and crop per
// encoder.onnx). Which input and output, the layouts and the image size come from the model's metadata
// and the config (model.ts); the output's per-image shape, and so what it is (vector, tokens, grid), is
// read by running the model once on a blank image. What the features depend on (the model file's
// SHA-256, input and output names, grid reordering, every preprocessing setting) goes into the encoder
// info, hence into the feature cache fingerprint: a change means features are computed again.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { EncoderConfig } from '../../config/schema.js';
import { ConfigError, ModelError } from '../../errors.js';
import type { ImageEncoder, Preprocessing } from '../types.js';
import { packPixels } from '../pixels.js';
import { checkExternalLocation, externalDataFiles } from './external.js';
import { applyPlan, planOutput, resolveInput, resolveOutput, shapeText, type OutputPlan } from './model.js';
import {
  createSession,
  floatTensor,
  loadOrt,
  ortDetail,
  ortLoadError,
  sessionMeta,
  type OrtSession,
} from './runtime.js';

export interface OnnxEncoderOptions {
  /** onnxruntime intra-op threads (0: all cores). */
  threads: number;
}

/** Read the model file: ModelError naming it when it cannot be read. */
export async function readModelFile(file: string): Promise<Buffer> {
  try {
    return await fs.readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EISDIR'
          ? 'is a folder, not an ONNX model file'
          : code === 'EACCES'
            ? 'permission denied'
            : code === 'ERR_FS_FILE_TOO_LARGE'
              ? 'larger than 2 GiB; save it with its weights in external data files (onnx.save(model, path, save_as_external_data=True))'
              : `cannot read it (${code ?? (e as Error).message})`;
    throw new ModelError(`${file}: ${why} (encoder.onnx.path: the ONNX image model)`);
  }
}

export interface OpenedModel {
  session: OrtSession;
  /** Size of the .onnx file. */
  bytes: number;
  /** SHA-256 (hex) of the .onnx file, followed, for a model with external data, by each external file's location and content. */
  sha256: string;
  /** External data files (relative to the model's folder), [] when the .onnx file holds every weight. */
  external: string[];
}

/**
 * Read, hash and open an ONNX model file. A model that keeps weights in external data files has them
 * hashed too, and its session is created from the path, so onnxruntime finds them next to it.
 */
export async function openModel(file: string, threads: number): Promise<OpenedModel> {
  const bytes = await readModelFile(file);
  const external = externalDataFiles(bytes);
  const h = createHash('sha256').update(bytes);
  for (const loc of external) {
    checkExternalLocation(file, loc);
    h.update(`\0${loc}\0`);
    await hashFile(h, path.join(path.dirname(path.resolve(file)), loc), file, loc);
  }
  const session = await createSession(external.length ? path.resolve(file) : bytes, { threads, where: file });
  return { session, bytes: bytes.length, sha256: h.digest('hex'), external };
}

async function hashFile(h: Hash, p: string, file: string, loc: string): Promise<void> {
  try {
    for await (const chunk of createReadStream(p)) h.update(chunk as Buffer);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ModelError(
      `${file}: its weights are in the external data file "${loc}", which cannot be read (${code === 'ENOENT' ? 'no such file' : (code ?? (e as Error).message)}); keep it next to the model file`,
    );
  }
}

const sha256Hex = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

export async function createOnnxEncoder(cfg: EncoderConfig, opts: OnnxEncoderOptions): Promise<ImageEncoder> {
  const o = cfg.onnx;
  if (!o)
    throw new ConfigError(
      'encoder.onnx: required when encoder.type is onnx: at least encoder.onnx.path (the model file); `captioner encoder inspect FILE` prints a block to start from',
    );
  if (cfg.runtime === 'tfjs')
    throw new ConfigError(
      'encoder.runtime tfjs: an ONNX encoder (encoder.type onnx) runs on onnxruntime only; set encoder.runtime to auto or onnx',
    );
  if (o.resizeSize !== undefined && o.resize !== 'shorter')
    throw new ConfigError(`encoder.onnx.resizeSize: applies to resize shorter only (resize is ${o.resize}); remove it`);
  const file = path.resolve(o.path);
  const ort = await loadOrt();
  if (!ort) throw new ConfigError(`encoder.type onnx: onnxruntime-node cannot be loaded here (${ortLoadError()})`);
  const opened = await openModel(o.path, opts.threads);
  const modelHash = opened.sha256;
  let session: OrtSession | null = opened.session;
  try {
    const meta = sessionMeta(session);
    const input = resolveInput(o.path, meta.inputs, { input: o.input, layout: o.layout, size: o.size });
    const output = resolveOutput(o.path, meta.outputs, o.output);
    const size = input.size;
    if (o.resizeSize !== undefined && o.resizeSize < size)
      throw new ConfigError(
        `encoder.onnx.resizeSize: must be at least the image size ${size} (the centre crop is cut out of the resized image), got ${o.resizeSize}`,
      );
    const shorter = o.resize === 'shorter';
    const preprocessing: Preprocessing = {
      size,
      resize: shorter ? 'shorter' : 'fill',
      ...(shorter ? { resizeSize: o.resizeSize ?? size } : {}),
      interpolation: o.interpolation,
      alpha: 'white',
      mode: 'normalise',
      scale: o.range === '0-1' ? 1 / 255 : 1,
      mean: [...o.mean],
      std: [...o.std],
      channelOrder: o.channelOrder,
      layout: input.layout,
    };
    const norm = {
      layout: input.layout,
      channelOrder: o.channelOrder,
      scale: preprocessing.scale!,
      mean: o.mean,
      std: o.std,
    };
    const pixels = size * size;
    const dims = (n: number) => (input.layout === 'nchw' ? [n, 3, size, size] : [n, size, size, 3]);

    /** One model call on n images: the output's values and dims. */
    const run = async (images: Uint8Array[]): Promise<{ data: Float32Array; dims: number[] }> => {
      for (let i = 0; i < images.length; i++) {
        if (images[i].length !== pixels * 3)
          throw new ModelError(
            `encoder: image ${i} has ${images[i].length} bytes, expected ${pixels * 3} (${size}x${size} RGB)`,
          );
      }
      let out;
      try {
        out = await session!.run(
          { [input.name]: await floatTensor(packPixels(images, pixels, norm), dims(images.length)) },
          [output.name],
        );
      } catch (e) {
        throw new ModelError(
          `${o.path}: running the model on ${images.length} ${size}x${size} image(s) failed: ${(e as Error).message.split('\n')[0]}`,
        );
      }
      const y = out[output.name];
      try {
        if (y.type !== 'float32')
          throw new ModelError(`${o.path}: output "${output.name}" came back as ${y.type}, expected float32`);
        const d = y.dims.map(Number);
        if (d[0] !== images.length)
          throw new ModelError(
            `${o.path}: output "${output.name}" has shape ${shapeText(d)} for a batch of ${images.length}; its first dimension must be the batch`,
          );
        return { data: y.data as Float32Array, dims: d };
      } finally {
        y.dispose?.();
      }
    };

    // what the output is: its shape for one (blank) image
    const probe = await run([new Uint8Array(pixels * 3)]);
    const plan: OutputPlan = planOutput(o.path, output.name, probe.dims.slice(1), o.outputLayout);
    const per = plan.modelShape.reduce((a, b) => a * b, 1);
    const s = session;
    return {
      info: {
        name: `onnx:${path.basename(file)}`,
        runtime: 'onnx',
        layer: output.name,
        shape: plan.shape,
        // a [C, H, W] grid is reordered before caching, so that is part of what computes the features
        fingerprint: `sha256:${sha256Hex(Buffer.from(JSON.stringify({ name: 'onnx', model: modelHash, input: input.name, output: output.name, ...(plan.transpose ? { outputLayout: 'chw' } : {}) })))}`,
        weights: file,
        weightsFingerprint: `sha256:${modelHash}`,
        preprocessing,
        detail: ortDetail(ort, opts.threads),
      },
      inputSize: size,
      async encode(images) {
        if (!session) throw new ModelError('encoder used after dispose()');
        if (!images.length) return [];
        const batches = input.fixedBatch === 1 ? images.map((im) => [im]) : [images];
        const result: Float32Array[] = [];
        for (const batch of batches) {
          const y = await run(batch);
          if (y.data.length !== batch.length * per) {
            throw new ModelError(
              `${o.path}: output "${output.name}" has shape ${shapeText(y.dims)} for a batch of ${batch.length}; it had ${shapeText(['N', ...plan.modelShape])} when probed`,
            );
          }
          for (let i = 0; i < batch.length; i++) result.push(applyPlan(plan, y.data.subarray(i * per, (i + 1) * per)));
        }
        return result;
      },
      async dispose() {
        if (!session) return;
        session = null;
        await s.release();
      },
    };
  } catch (e) {
    const s = session;
    session = null;
    await s?.release();
    throw e;
  }
}
