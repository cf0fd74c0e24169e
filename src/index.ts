// captioner as a library: the functions the CLI is built on, for TypeScript and JavaScript programs.
//   const c = await loadCaptioner('work/demo/model');
//   const { caption, logprob } = await c.caption('photo.jpg', { beam: 3 });
//   await c.dispose();
// Configs are plain objects validated by the same zod schema as the YAML files (config()), and every
// failure is a typed CaptionerError (UsageError, ConfigError, DataError, ModelError) with an exit code.
import { promises as fs } from 'node:fs';
import type { Config } from './config/schema.js';
import { validateConfig } from './config/load.js';
import { DataError } from './errors.js';
import type { CaptionOptions, CaptionOutcome } from './caption/types.js';
import type { LoadCaptionerOptions } from './caption/load.js';
import { scoreCaptions, type ScorePair, type Scores } from './eval/score.js';
import type { InspectOptions, InspectReport } from './features/onnx/inspect.js';

export type { Config } from './config/schema.js';
export type { CaptionOptions, CaptionOutcome } from './caption/types.js';
export type { LoadCaptionerOptions } from './caption/load.js';
export type { ScorePair, Scores } from './eval/score.js';
export type { InspectOptions, InspectReport } from './features/onnx/inspect.js';
export { CaptionerError, ConfigError, DataError, ExitCode, ModelError, UsageError } from './errors.js';
export { loadConfig } from './config/load.js';

/** A complete config from a partial one: schema defaults filled in, unknown keys and bad values refused. */
export function config(partial: Record<string, unknown> = {}): Config {
  return validateConfig(partial, 'config');
}

/** One captioned image. */
export interface Caption {
  caption: string;
  /** The caption's words. */
  tokens: string[];
  /** Log-probability of the caption under the model. */
  logprob: number;
}

/** A trained model with its image encoder, ready to caption. */
export interface CaptionerModel {
  readonly info: { name: string; encoder: string; backend: string };
  /** Caption one image: a path, or the bytes of an image file (JPEG, PNG, WebP, ...). */
  caption(image: string | Uint8Array, options?: CaptionOptions): Promise<Caption>;
  /** Caption many images in batches; one outcome per input, in order, failures included (no throw). */
  captionMany(images: readonly (string | Uint8Array)[], options?: CaptionOptions): Promise<CaptionOutcome[]>;
  /** Free the model, the encoder and their tensors. */
  dispose(): Promise<void>;
}

async function bytesOf(image: string | Uint8Array): Promise<Buffer> {
  if (typeof image !== 'string') return Buffer.from(image.buffer, image.byteOffset, image.byteLength);
  try {
    return await fs.readFile(image);
  } catch (e) {
    throw new DataError(`${image}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** Load a trained run folder (`<workdir>/model`): weights, vocabulary, decode settings and encoder. */
export async function loadCaptioner(runDir: string, options: LoadCaptionerOptions = {}): Promise<CaptionerModel> {
  const { loadCaptioner: load } = await import('./caption/load.js');
  const c = await load(runDir, options);
  const many = async (images: readonly (string | Uint8Array)[], opts?: CaptionOptions) => {
    const inputs = await Promise.all(images.map(async (img, i) => ({ id: typeof img === 'string' ? img : String(i), bytes: await bytesOf(img) })));
    return c.captionBatch(inputs, opts);
  };
  return {
    info: c.info,
    async caption(image, opts) {
      const [out] = await many([image], opts);
      if (!out.ok) throw new DataError(`${typeof image === 'string' ? image : 'image'}: ${out.error}`);
      return { caption: out.caption, tokens: out.tokens, logprob: out.logprob };
    },
    captionMany: many,
    dispose: () => c.dispose(),
  };
}

/** `captioner prep`: parse, clean and split a captions dataset into `<workdir>/prepared`. */
export async function prepare(cfg: Config) {
  const { runPrep } = await import('./prep/run.js');
  return runPrep(cfg);
}

/** `captioner features`: run the image encoder over every prepared image once and cache the vectors. */
export async function extractFeatures(cfg: Config, options: Parameters<typeof import('./features/run.js').runFeatures>[1] = {}) {
  const { runFeatures } = await import('./features/run.js');
  return runFeatures(cfg, options);
}

/** `captioner train`: train the decoder on the prepared dataset and cached features. */
export async function train(cfg: Config, options: Parameters<typeof import('./train/stage.js').runTrain>[1] = {}) {
  const { runTrain } = await import('./train/stage.js');
  return runTrain(cfg, options);
}

/** `captioner eval`: caption a split and score it (BLEU-1..4, CIDEr-D, ROUGE-L). */
export async function evaluate(cfg: Config, options: Parameters<typeof import('./eval/run.js').runEval>[1] = {}) {
  const { runEval } = await import('./eval/run.js');
  return runEval(cfg, options);
}

/**
 * `captioner encoder inspect`: an ONNX model's inputs and outputs, what each output would be as features
 * (vector, tokens, grid: it runs the model once on a blank image) and an `encoder` config to start from.
 */
export async function inspectEncoder(file: string, options: InspectOptions = {}): Promise<InspectReport> {
  const { inspectOnnx } = await import('./features/onnx/inspect.js');
  return inspectOnnx(file, options);
}

/** `captioner score`: corpus and per-image metrics of candidate captions against references. */
export function score(pairs: readonly ScorePair[], tokenize: 'basic' | 'none' = 'basic'): Scores {
  return scoreCaptions(pairs, tokenize);
}
