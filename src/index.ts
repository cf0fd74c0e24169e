// captioner as a library: the functions the CLI is built on, for TypeScript and JavaScript programs.
//   const c = await loadCaptioner('work/demo/model');
//   const { caption, logprob } = await c.caption('photo.jpg', { beam: 3 });
//   await c.dispose();
// Configs are plain objects validated by the same zod schema as the YAML files (config()), and every
// failure is a typed CaptionerError (UsageError, ConfigError, DataError, ModelError) with an exit code.
import { z } from 'zod';
import {
  BackendName,
  ConfigSchema,
  DecodeSchema,
  EncoderSchema,
  EvalSchema,
  OnnxEncoderSchema,
  type Config,
} from './config/schema.js';
import { formatIssues, validateConfig } from './config/load.js';
import { DataError, UsageError } from './errors.js';
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

// ------------------------------------------------------------------ argument checks
// Every entry point checks its arguments with the schemas the CLI's flags and configs go through (same
// bounds: beam 1..50, threads 0..256, ...), so a wrong type or a huge value is a UsageError or ConfigError
// naming the argument, never a TypeError from deep inside or an allocation that never ends.

/** The schema's setting without its default: an option left out stays undefined (the config's value applies). */
const opt = <T extends z.ZodTypeAny>(s: { unwrap(): T }) => s.unwrap().optional();
const signal = z.instanceof(AbortSignal, { error: 'expected an AbortSignal' }).optional();
/** An object passed through as it is (a config checked apart, loaded weights, an encoder: never copied). */
const object = (what: string) =>
  z
    .custom<Record<string, unknown>>((v) => typeof v === 'object' && v !== null && !Array.isArray(v), {
      error: `expected ${what}`,
    })
    .optional();

const CaptionOptionsSchema = z
  .object({
    beam: opt(DecodeSchema.shape.beam),
    attention: z.boolean({ error: 'expected true or false' }).optional(),
  })
  .strict();

const LoadOptionsSchema = z
  .object({
    config: object('a config object (from config())'),
    backend: BackendName.optional(),
    threads: opt(ConfigSchema.shape.threads),
    beam: opt(DecodeSchema.shape.beam),
    runtime: opt(EncoderSchema.shape.runtime),
    which: z.enum(['best', 'last']).optional(),
    vgg16Weights: object('loaded VGG16 weights'),
    weightsCacheDir: z.string({ error: 'expected a folder path' }).optional(),
    decodeWorkers: opt(DecodeSchema.shape.workers),
    images: z.number({ error: 'expected a non-negative integer' }).int().min(0).optional(),
    signal,
  })
  .strict();

/** Parse `value` with `schema`, or a UsageError "fn(): invalid options:\n  beam: expected ..." (at most 10 lines). */
function checked<T>(schema: z.ZodType<T>, value: unknown, where: string): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const lines = [...new Set(formatIssues(r.error.issues).map((l) => l.replace(/^\(root\): /, '')))];
  const shown = lines.slice(0, 10).concat(lines.length > 10 ? [`... and ${lines.length - 10} more`] : []);
  throw new UsageError(`${where}:\n${shown.map((l) => '  ' + l.replace(/\n/g, '\n  ')).join('\n')}`);
}

/** A complete, valid config from what a caller passed as one (the CLI's schema, ConfigError on bad values). */
function configArg(cfg: unknown, fn: string): Config {
  if (cfg === null || typeof cfg !== 'object' || Array.isArray(cfg)) {
    throw new UsageError(
      `${fn}(): expected a config object (from config({...}) or (await loadConfig({ file })).config), got ${cfg === null ? 'null' : Array.isArray(cfg) ? 'an array' : `${typeof cfg} ${JSON.stringify(cfg)}`}`,
    );
  }
  return validateConfig(cfg, `${fn}() config`);
}

const imageArg = (image: unknown, where: string): string | Uint8Array => {
  if (typeof image === 'string' || image instanceof Uint8Array) return image;
  throw new UsageError(
    `${where}: expected a file path or the bytes of an image (Uint8Array, Buffer), got ${image === null ? 'null' : typeof image}`,
  );
};

/** Load a trained run folder (`<workdir>/model`): weights, vocabulary, decode settings and encoder. */
export async function loadCaptioner(runDir: string, options: LoadCaptionerOptions = {}): Promise<CaptionerModel> {
  if (typeof runDir !== 'string' || runDir === '')
    throw new UsageError(
      `loadCaptioner(): expected the path of a run folder, got ${JSON.stringify(runDir) ?? typeof runDir}`,
    );
  const loadOpts = checked(
    LoadOptionsSchema,
    options ?? {},
    'loadCaptioner(): invalid options',
  ) as LoadCaptionerOptions;
  if (loadOpts.config) loadOpts.config = configArg(loadOpts.config, 'loadCaptioner');
  const { loadCaptioner: load } = await import('./caption/load.js');
  const { readImageFile } = await import('./caption/run.js');
  const c = await load(runDir, loadOpts);
  const many = async (images: readonly (string | Uint8Array)[], opts?: CaptionOptions) => {
    if (!Array.isArray(images))
      throw new UsageError(`captionMany(): expected an array of file paths or image bytes, got ${typeof images}`);
    const options = checked(CaptionOptionsSchema, opts ?? {}, 'captionMany(): invalid options');
    // a file that cannot be read is that image's failure, as a file that is not an image is
    const read = await Promise.all(
      images.map(async (img, i): Promise<{ bytes: Buffer } | { failure: CaptionOutcome }> => {
        const image = imageArg(img, `captionMany(): images[${i}]`);
        if (typeof image !== 'string') return { bytes: Buffer.from(image.buffer, image.byteOffset, image.byteLength) };
        try {
          return { bytes: await readImageFile(image) };
        } catch (e) {
          const err = e as { reason?: string; kind?: 'unsupported' | 'corrupt' | 'too_large' };
          return { failure: { ok: false, error: err.reason ?? String(e), kind: err.kind ?? 'corrupt' } };
        }
      }),
    );
    const inputs = read.flatMap((r, i) =>
      'bytes' in r ? [{ id: typeof images[i] === 'string' ? (images[i] as string) : String(i), bytes: r.bytes }] : [],
    );
    const outcomes = inputs.length ? await c.captionBatch(inputs, options) : [];
    let k = 0;
    return read.map((r) => ('bytes' in r ? outcomes[k++] : r.failure));
  };
  return {
    info: c.info,
    async caption(image, opts) {
      const checkedImage = imageArg(image, 'caption(): image');
      const [out] = await many([checkedImage], checked(CaptionOptionsSchema, opts ?? {}, 'caption(): invalid options'));
      if (!out.ok) throw new DataError(`${typeof image === 'string' ? image : 'image'}: ${out.error}`);
      return { caption: out.caption, tokens: out.tokens, logprob: out.logprob };
    },
    captionMany: many,
    dispose: () => c.dispose(),
  };
}

const ShardSchema = z
  .object({ index: z.number().int().min(1), count: z.number().int().min(1) })
  .strict()
  .refine((s) => s.index <= s.count, { error: 'index must be at most count' });
const FeaturesOptionsSchema = z
  .object({
    shard: ShardSchema.optional(),
    limit: z.number({ error: 'expected a non-negative integer' }).int().min(0).optional(),
    encoder: object('an image encoder'),
    signal,
  })
  .strict();
const TrainOptionsSchema = z
  .object({ resume: z.boolean({ error: 'expected true or false' }).optional(), signal })
  .strict();
const EvalOptionsSchema = z
  .object({
    model: z.string({ error: 'expected a run folder path' }).optional(),
    which: z.enum(['best', 'last']).optional(),
    noBaseline: z.boolean({ error: 'expected true or false' }).optional(),
    noThumbnails: z.boolean({ error: 'expected true or false' }).optional(),
    signal,
  })
  .strict();

/** `captioner prep`: parse, clean and split a captions dataset into `<workdir>/prepared`. */
export async function prepare(cfg: Config) {
  const config = configArg(cfg, 'prepare');
  const { runPrep } = await import('./prep/run.js');
  return runPrep(config);
}

/** `captioner features`: run the image encoder over every prepared image once and cache the vectors. */
export async function extractFeatures(
  cfg: Config,
  options: Parameters<typeof import('./features/run.js').runFeatures>[1] = {},
) {
  const config = configArg(cfg, 'extractFeatures');
  const opts = checked(FeaturesOptionsSchema, options ?? {}, 'extractFeatures(): invalid options') as typeof options;
  const { runFeatures } = await import('./features/run.js');
  return runFeatures(config, opts);
}

/** `captioner train`: train the decoder on the prepared dataset and cached features. */
export async function train(cfg: Config, options: Parameters<typeof import('./train/stage.js').runTrain>[1] = {}) {
  const config = configArg(cfg, 'train');
  const opts = checked(TrainOptionsSchema, options ?? {}, 'train(): invalid options');
  const { runTrain } = await import('./train/stage.js');
  return runTrain(config, opts);
}

/** `captioner eval`: caption a split and score it (BLEU-1..4, CIDEr-D, ROUGE-L). */
export async function evaluate(cfg: Config, options: Parameters<typeof import('./eval/run.js').runEval>[1] = {}) {
  const config = configArg(cfg, 'evaluate');
  const opts = checked(EvalOptionsSchema, options ?? {}, 'evaluate(): invalid options');
  const { runEval } = await import('./eval/run.js');
  return runEval(config, opts);
}

const ScorePairsSchema = z
  .array(
    z.object({
      id: z.string({ error: 'expected a string' }),
      candidate: z.string({ error: 'expected a string' }),
      references: z
        .array(z.string({ error: 'expected a string' }), { error: 'expected an array of strings' })
        .min(1, { error: 'expected at least one reference caption' }),
    }),
    { error: 'expected an array of { id, candidate, references }' },
  )
  .min(1, { error: 'nothing to score: expected at least one { id, candidate, references }' });

const InspectOptionsSchema = z
  .object({
    size: OnnxEncoderSchema.shape.size,
    layout: z.enum(['nchw', 'nhwc']).optional(),
    output: z.string({ error: 'expected an output name' }).optional(),
    threads: opt(ConfigSchema.shape.threads),
  })
  .strict();

/**
 * `captioner encoder inspect`: an ONNX model's inputs and outputs, what each output would be as features
 * (vector, tokens, grid: it runs the model once on a blank image) and an `encoder` config to start from.
 */
export async function inspectEncoder(file: string, options: InspectOptions = {}): Promise<InspectReport> {
  if (typeof file !== 'string' || file === '')
    throw new UsageError(
      `inspectEncoder(): expected the path of an ONNX file, got ${JSON.stringify(file) ?? typeof file}`,
    );
  const opts = checked(InspectOptionsSchema, options ?? {}, 'inspectEncoder(): invalid options') as InspectOptions;
  const { inspectOnnx } = await import('./features/onnx/inspect.js');
  return inspectOnnx(file, opts);
}

/** `captioner score`: corpus and per-image metrics of candidate captions against references. */
export function score(pairs: readonly ScorePair[], tokenize: 'basic' | 'none' = 'basic'): Scores {
  checked(ScorePairsSchema, pairs, 'score(): invalid pairs');
  const mode = checked(EvalSchema.shape.tokenize.unwrap(), tokenize, 'score(): invalid tokenize mode');
  return scoreCaptions(pairs, mode);
}
