// The trained run folder: the one module that writes it, reads it and checks its format version.
//   manifest.json   kind captioner.model, version, what the model was trained on, model.type + spec
//   vocab.json      the vocabulary          config.yaml   the resolved config of the run
//   best/, last/    weights.json + weights.bin (decoder type, spec, feature normalisation, weights);
//                   last/ also holds the optimizer state and state.json (written by src/train/checkpoint.ts)
//   history.jsonl, loss.svg                 per-epoch losses (training; reward and CIDEr-D for SCST runs)
// Version 2 records the decoder type (manifest `model: { type, spec }`, weights meta `type`). Version 1
// folders (before decoders had types; all merge models) are read as merge models, so existing trained
// models keep working. A newer version than this code knows is refused with a clear ModelError.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import type { Config } from '../config/schema.js';
import { ModelError } from '../errors.js';
import { Vocab } from '../text/vocab.js';
import { writeFileAtomic, writeJsonAtomic } from '../util/fsx.js';
import { decoderKind, type Decoder } from './decoders/index.js';
import { encodeTensors, readTensors, writeDirAtomic, type NamedArray } from './io.js';

export const RUN_KIND = 'captioner.model';
/** The run folder format this code writes. */
export const RUN_VERSION = 2;
/** Format versions this code reads. */
export const RUN_VERSIONS_READ = [1, 2] as const;
export const WEIGHTS_FORMAT = 'captioner.weights';
/** The files of a run folder, relative to it. */
export const RUN_FILES = {
  best: 'best/weights.json',
  last: 'last/weights.json',
  vocab: 'vocab.json',
  config: 'config.yaml',
  history: 'history.jsonl',
  chart: 'loss.svg',
} as const;
/** What a run folder holds at its top (besides eval output written once the manifest exists). */
export const RUN_NAMES = [
  'manifest.json',
  'vocab.json',
  'config.yaml',
  'history.jsonl',
  'loss.svg',
  'best',
  'last',
] as const;

/** The encoder and cache the model's features came from (copied from the feature cache manifest). */
export interface RunFeatures {
  dir: string;
  fingerprint: string;
  /** Enough to rebuild the same image encoder (src/caption/load.ts). */
  encoder: unknown;
  /** Per-image shape in the cache: [D] or a grid [H, W, C]. */
  shape: number[];
  dtype: string;
}

/** How a run was fine-tuned from another run (manifest.json `fineTuned`; absent on cross-entropy runs). */
export interface RunFineTuning {
  method: 'scst';
  /** The run it started from (absolute path), its manifest name and the checkpoint taken (best/). */
  from: { dir: string; name: string; checkpoint: 'best'; status: string };
  reward: {
    metric: 'CIDEr-D' | 'CIDEr-D + BLEU-4';
    bleuWeight: number;
    documentFrequencies: 'training references';
    images: number;
    tokenize: string;
  };
  k: number;
  baseline: 'mean' | 'greedy';
  maxLength: number;
}

/** manifest.json as this code writes it (and as version-1 manifests are read). */
export interface RunManifest {
  kind: typeof RUN_KIND;
  version: number;
  name: string;
  updatedAt?: string;
  status: string;
  backend: string;
  dataset: { dir: string; fingerprint: string; vocabSize: number };
  features: RunFeatures;
  /** The decoder: its registry type and spec (version 1 wrote the bare merge spec here). */
  model: { type: string; spec: Record<string, unknown> };
  /** What best/ holds: the lowest validation loss, or the last epoch when there is no validation data. */
  best?: 'lowest-validation-loss' | 'last-epoch' | 'highest-validation-cider';
  /** Set on runs fine-tuned by self-critical sequence training (src/train/scst-run.ts): from which run, with which reward. */
  fineTuned?: RunFineTuning;
  changes?: unknown[];
  files: typeof RUN_FILES;
  featureNorm?: { file: string; mean: string; std: string };
  metrics: Record<string, number | null>;
}

export type RunManifestBody = Omit<RunManifest, 'kind' | 'version'>;

export interface TrainedModel {
  dir: string;
  manifest: RunManifest;
  vocab: Vocab;
  decoder: Decoder;
}

// ---------------------------------------------------------------- checkpoints (best/, last/)

/** Save the decoder's type, spec, weights and feature normalisation into folder `dir` (weights.json + weights.bin),
 *  replacing it atomically. Non-finite weights are refused (ModelError): a diverged model must never replace a good checkpoint. */
export async function saveDecoder(
  dir: string,
  model: Decoder,
  extraFiles: Record<string, string | Uint8Array> = {},
): Promise<void> {
  const values = await model.readWeights();
  for (const [name, data] of Object.entries(values)) {
    if (data.some((v) => !Number.isFinite(v)))
      throw new ModelError(
        `${dir}: refusing to save non-finite weights (tensor "${name}"): training diverged; lower train.learningRate or train.clipNorm`,
      );
  }
  const arrays: NamedArray[] = Object.entries(values).map(([name, data]) => ({
    name,
    shape: model.weights[name].shape,
    data,
  }));
  arrays.push({ name: 'norm/mean', shape: [model.norm.mean.length], data: model.norm.mean });
  arrays.push({ name: 'norm/std', shape: [model.norm.std.length], data: model.norm.std });
  const { index, bin } = encodeTensors(
    WEIGHTS_FORMAT,
    { type: model.type, spec: model.spec, norm: ['norm/mean', 'norm/std'] },
    arrays,
  );
  await writeDirAtomic(dir, { 'weights.json': index, 'weights.bin': bin, ...extraFiles });
}

/** Load a decoder saved by saveDecoder (a version-1 checkpoint has no type: merge). ModelError on a missing or corrupt folder. */
export async function loadDecoder(dir: string): Promise<Decoder> {
  const where = path.join(dir, 'weights.json');
  const { meta, arrays } = await readTensors(dir, 'weights', WEIGHTS_FORMAT);
  const type = meta.type ?? 'merge';
  let kind;
  try {
    if (typeof type !== 'string') throw new ModelError(`decoder type ${JSON.stringify(type)} is not a name`);
    kind = decoderKind(type);
    kind.validateSpec(meta.spec);
  } catch (e) {
    throw new ModelError(`${where}: ${(e as Error).message}`);
  }
  const values: Record<string, Float32Array> = {};
  for (const [name, a] of arrays) {
    const bad = a.data.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0)
      throw new ModelError(
        `${path.join(dir, 'weights.bin')}: tensor "${name}" holds ${a.data[bad]} (non-finite weights: the model is broken; retrain it or use another checkpoint)`,
      );
    values[name] = a.data;
  }
  const mean = arrays.get('norm/mean')?.data;
  const std = arrays.get('norm/std')?.data;
  if (!mean || !std) throw new ModelError(`${where}: feature normalisation (norm/mean, norm/std) is missing`);
  try {
    return kind.create(meta.spec, values, { mean, std });
  } catch (e) {
    throw new ModelError(`${where}: ${(e as Error).message}`);
  }
}

// ---------------------------------------------------------------- manifest, vocabulary, config

/** Write manifest.json (atomically) with this code's kind and version. */
export async function writeRunManifest(dir: string, body: RunManifestBody): Promise<void> {
  await writeJsonAtomic(path.join(dir, 'manifest.json'), { kind: RUN_KIND, version: RUN_VERSION, ...body });
}

async function readJsonModel<T>(file: string, what: string): Promise<T> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ModelError(
      `${file}: cannot read ${what}${code === 'ENOENT' ? ': no such file (is this a folder written by `captioner train`?)' : `: ${code}`}`,
    );
  }
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new ModelError(`${file}: not valid JSON: ${(e as Error).message}`);
  }
}

/** Read manifest.json: checks kind and version; a version-1 manifest is returned in the version-2 shape (merge). */
export async function readRunManifest(dir: string): Promise<RunManifest> {
  const file = path.join(dir, 'manifest.json');
  const m = await readJsonModel<Record<string, unknown>>(file, 'the model manifest');
  if (m?.kind !== RUN_KIND)
    throw new ModelError(`${file}: not a captioner model manifest (kind ${JSON.stringify(m?.kind)})`);
  const v = m.version;
  if (!RUN_VERSIONS_READ.includes(v as 1 | 2)) {
    const newer = typeof v === 'number' && v > RUN_VERSION;
    throw new ModelError(
      `${file}: run folder format version ${JSON.stringify(v)} ${newer ? 'is newer than this captioner reads (upgrade captioner)' : `is not one this captioner reads (${RUN_VERSIONS_READ.join(', ')})`}`,
    );
  }
  if (v === 1) {
    // version 1: `model` is the bare merge spec
    return {
      ...(m as unknown as RunManifest),
      version: 1,
      model: { type: 'merge', spec: (m.model ?? {}) as Record<string, unknown> },
    };
  }
  const model = m.model as RunManifest['model'] | undefined;
  if (!model || typeof model !== 'object' || typeof model.type !== 'string')
    throw new ModelError(`${file}: model.type is missing (the manifest is damaged)`);
  return m as unknown as RunManifest;
}

/** Read vocab.json. */
export async function readRunVocab(dir: string): Promise<Vocab> {
  const file = path.join(dir, RUN_FILES.vocab);
  const json = await readJsonModel<{ tokens: string[] }>(file, 'the vocabulary');
  try {
    return new Vocab(json.tokens);
  } catch (e) {
    throw new ModelError(`${file}: ${(e as Error).message}`);
  }
}

/** Load a run folder. `which`: best (default; lowest validation loss) or last (latest checkpoint). */
export async function loadTrainedModel(dir: string, which: 'best' | 'last' = 'best'): Promise<TrainedModel> {
  const manifest = await readRunManifest(dir);
  const vocab = await readRunVocab(dir);
  const decoder = await loadDecoder(path.join(dir, which));
  const fail = (msg: string) => {
    decoder.dispose();
    return new ModelError(`${dir}: ${msg}`);
  };
  if (decoder.type !== manifest.model.type)
    throw fail(
      `the manifest says model.type ${manifest.model.type}, ${which}/weights.json holds a ${decoder.type} decoder (the folder is damaged)`,
    );
  if (decoder.spec.vocabSize !== vocab.size)
    throw fail(`the weights expect ${decoder.spec.vocabSize} words, vocab.json has ${vocab.size}`);
  return { dir, manifest, vocab, decoder };
}

/** The run's config.yaml as a plain object ({} when absent: older or hand-made runs). */
export async function readRunConfig(runDir: string): Promise<Record<string, unknown>> {
  const file = path.join(runDir, RUN_FILES.config);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch {
    return {}; // older or hand-made runs: the manifest alone must do
  }
  try {
    const v = YAML.parse(text) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch (e) {
    throw new ModelError(`${file}: not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
}

/** The decode settings a run records (its config.yaml `decode`), the lowest layer of caption/eval configs. */
export async function runDecodeSettings(runDir: string): Promise<Record<string, unknown>> {
  const d = (await readRunConfig(runDir)).decode;
  return d && typeof d === 'object' && !Array.isArray(d) ? (d as Record<string, unknown>) : {};
}

/** Write config.yaml (atomically). */
export async function writeRunConfig(dir: string, config: Config): Promise<void> {
  await writeFileAtomic(path.join(dir, RUN_FILES.config), YAML.stringify(config));
}

/** Write vocab.json (atomically) from its serialised text. */
export async function writeRunVocab(dir: string, text: string): Promise<void> {
  await writeFileAtomic(path.join(dir, RUN_FILES.vocab), text);
}
