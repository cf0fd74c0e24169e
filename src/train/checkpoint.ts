// A run folder's checkpoints and records, for cross-entropy training (run.ts) and self-critical fine-tuning
// (scst-run.ts) alike: last/ (weights, optimizer.json/.bin with the Adam moments, state.json) that --resume
// continues from, best/ (weights), vocab.json, config.yaml, history.jsonl + loss.svg and manifest.json; the
// --resume checks (config.yaml against the config, the checkpoint against the data, features and model);
// and guardWrite, which turns a write the filesystem refused into one line naming the file.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { DataError, ModelError, UsageError } from '../errors.js';
import { log } from '../log.js';
import type { Config } from '../config/schema.js';
import { ConfigSchema, ModelSchema, TrainSchema } from '../config/schema.js';
import { renameDeprecatedKeys } from '../config/load.js';
import type { Prepared } from '../prep/prepared.js';
import { serializeVocab } from '../prep/prepared.js';
import { ensureDir, exists, writeFailure, writeFileAtomic } from '../util/fsx.js';
import { DECODERS, type Decoder, type Recipe } from '../model/decoders/index.js';
import { encodeTensors, readTensors, recoverDir, type NamedArray } from '../model/io.js';
import {
  loadDecoder,
  RUN_FILES,
  saveDecoder,
  writeRunConfig,
  writeRunManifest,
  writeRunVocab,
  type RunManifestBody,
} from '../model/runfolder.js';

/** The format of last/optimizer.json (iterations, learning rate, Adam moments). */
const OPT_FORMAT = 'captioner.adam';

/** A training setting changed on --resume (applied from `step` on). */
export interface SettingChange {
  key: string;
  from: unknown;
  to: unknown;
  epoch: number;
  step: number;
}

/** Resumable progress of a cross-entropy run, saved in last/state.json. */
export interface RunState {
  kind: 'captioner.train-state';
  /** Epochs fully done. */
  epoch: number;
  /** Batches done in the epoch in progress (epoch + 1). */
  batchInEpoch: number;
  step: number;
  learningRate: number;
  bestValLoss: number;
  bestEpoch: number;
  /** Epochs since the last improvement (early stopping / lr decay). */
  sinceBest: number;
  sinceDecay: number;
  /** Running sums for the epoch in progress. */
  epochLossSum: number;
  epochTokens: number;
  epochSeconds: number;
  datasetFingerprint: string;
  featureFingerprint: string;
  /** The decoder type (absent in checkpoints written before decoders had types: merge). */
  type?: string;
  spec: Record<string, unknown>;
  seed: number;
  batchSize: number;
  /** Worker threads the last steps ran on (train.workers resolved; absent in older checkpoints: 1). */
  workers?: number;
  /** Training settings changed on --resume, in order. */
  changes?: SettingChange[];
}

/** What state.json holds in every kind of run (the fingerprints --resume checks). */
interface StateBase {
  kind: string;
  datasetFingerprint: string;
  featureFingerprint: string;
}

/** The optimizer's resumable state (Adam, or the parallel engine's copy of it). */
export interface OptimizerState {
  iterations: number;
  learningRate: number;
  arrays: NamedArray[];
}

export const finiteOrNull = (v: number) => (Number.isFinite(v) ? v : null);

/**
 * Run one write of the run folder; a filesystem failure (full disk, I/O error, permissions) becomes a
 * one-line DataError naming `target` (exit 3), after removing the temporaries this process left next to it.
 */
export async function guardWrite<T>(target: string, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (e) {
    const reason = writeFailure(e);
    if (!reason) throw e;
    const dir = path.dirname(target);
    const base = path.basename(target);
    const names = await fs.readdir(dir).catch(() => [] as string[]);
    for (const n of names) {
      if (
        n.startsWith(`${base}.`) &&
        (n.includes(`.${process.pid}.`) || n.includes(`-${process.pid}-`)) &&
        /\.tmp|\.new-/.test(n)
      ) {
        await fs.rm(path.join(dir, n), { recursive: true, force: true }).catch(() => {});
      }
    }
    throw new DataError(
      `${target}: cannot write: ${reason}; nothing half-written was left (free some space and run again; --resume continues from the last saved checkpoint)`,
    );
  }
}

/** Finish or roll back a checkpoint swap an earlier process was killed in the middle of (last/, best/). */
export async function recoverCheckpoints(out: string): Promise<void> {
  for (const d of [path.join(out, 'last'), path.join(out, 'best')]) {
    const did = await guardWrite(d, () => recoverDir(d));
    if (did) log.warn(did);
  }
}

/** A run that does not --resume must not start over an existing one. */
export async function refuseExistingRun(out: string): Promise<void> {
  if (await exists(path.join(out, 'last', 'state.json'))) {
    throw new UsageError(
      `${out}: already holds a training run; continue it with --resume, or choose another folder with --out`,
    );
  }
}

/** Create the run folder and write its vocab.json. */
export async function startRunFolder(out: string, prepared: Prepared): Promise<void> {
  await guardWrite(out, () => ensureDir(out));
  await guardWrite(path.join(out, RUN_FILES.vocab), () => writeRunVocab(out, serializeVocab(prepared.vocab)));
}

/** Record the run's config (config.yaml, which the next --resume compares with). */
export async function saveRunConfig(out: string, config: Config): Promise<void> {
  await guardWrite(path.join(out, RUN_FILES.config), () => writeRunConfig(out, config));
}

/** Replace last/ with the model, the optimizer state and `state` (state.json), in one swap. */
export async function saveLast(out: string, model: Decoder, optimizer: OptimizerState, state: object): Promise<void> {
  const lastDir = path.join(out, 'last');
  const opt = encodeTensors(
    OPT_FORMAT,
    { iterations: optimizer.iterations, learningRate: optimizer.learningRate },
    optimizer.arrays,
  );
  const files = {
    'optimizer.json': opt.index,
    'optimizer.bin': opt.bin,
    'state.json': JSON.stringify(state, null, 1) + '\n',
  };
  await guardWrite(lastDir, () => saveDecoder(lastDir, model, files));
}

/** Replace best/ with the model. */
export async function saveBest(out: string, model: Decoder): Promise<void> {
  const bestDir = path.join(out, 'best');
  await guardWrite(bestDir, () => saveDecoder(bestDir, model));
}

/** After an interrupt, once the caller has saved last/: say where the run stopped and how to go on. */
export function logInterrupted(lastDir: string, state: { epoch: number; batchInEpoch: number }, epochs: number): void {
  const where =
    state.epoch >= epochs ? `all ${epochs} epochs done` : `epoch ${state.epoch + 1}, batch ${state.batchInEpoch}`;
  log.info(`interrupted: checkpoint saved in ${lastDir} (${where}); continue with --resume`);
}

/** The optimizer state in last/ (iterations and moments; the learning rate is state.json's). */
export async function readOptimizer(out: string): Promise<{ iterations: number; arrays: Map<string, NamedArray> }> {
  const { meta, arrays } = await readTensors(path.join(out, 'last'), 'optimizer', OPT_FORMAT);
  return { iterations: Number(meta.iterations), arrays };
}

/** last/state.json for --resume; `wrongKind` is the error for a checkpoint of another kind of run. */
export async function readState<S extends StateBase>(
  out: string,
  kind: S['kind'],
  wrongKind: (file: string) => Error,
): Promise<S> {
  const file = path.join(out, 'last', 'state.json');
  let raw: S;
  try {
    raw = JSON.parse(await fs.readFile(file, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UsageError(
      `--resume: ${code === 'ENOENT' ? `no checkpoint in ${out} (no last/state.json); start without --resume` : `${file}: cannot read: ${(e as Error).message}`}`,
    );
  }
  if (raw?.kind !== kind) throw wrongKind(file);
  return raw;
}

/** The checkpoint must come from the same prepared dataset and feature cache. */
export function checkFingerprints(state: StateBase, dsFp: string, featFp: string): void {
  if (state.datasetFingerprint !== dsFp) {
    throw new DataError(
      `--resume: the prepared dataset changed since this run started (fingerprint ${state.datasetFingerprint.slice(0, 12)} -> ${dsFp.slice(0, 12)}); start a new run`,
    );
  }
  if (state.featureFingerprint !== featFp) {
    throw new DataError(
      `--resume: the feature cache changed since this run started (fingerprint ${state.featureFingerprint.slice(0, 12)} -> ${featFp.slice(0, 12)}); start a new run`,
    );
  }
}

/** history.jsonl's records up to epoch `upTo` (the checkpoint's; later ones were never checkpointed). */
export async function readHistory<R extends { epoch: number }>(out: string, upTo: number): Promise<R[]> {
  const file = path.join(out, RUN_FILES.history);
  if (!(await exists(file))) return [];
  return (await fs.readFile(file, 'utf8'))
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as R)
    .filter((r) => r.epoch <= upTo);
}

/** Rewrite history.jsonl (one record per line) and its chart loss.svg. */
export async function writeHistory(out: string, history: readonly object[], svg: string): Promise<void> {
  const hfile = path.join(out, RUN_FILES.history);
  await guardWrite(hfile, () => writeFileAtomic(hfile, history.map((h) => JSON.stringify(h)).join('\n') + '\n'));
  const chart = path.join(out, RUN_FILES.chart);
  await guardWrite(chart, () => writeFileAtomic(chart, svg));
}

/** What a kind of run puts in its manifest; the rest is common to all runs. */
export interface ManifestParts {
  features: RunManifestBody['features'];
  model: RunManifestBody['model'];
  best: RunManifestBody['best'];
  /** Between `best` and `files`: `changes` (cross-entropy runs) or `fineTuned` (self-critical ones). */
  extra: Pick<RunManifestBody, 'changes'> | Pick<RunManifestBody, 'fineTuned'>;
  metrics: RunManifestBody['metrics'];
}

/** Write manifest.json. */
export async function writeManifest(
  out: string,
  o: { config: Config; backend: string; prepared: Prepared },
  status: string,
  parts: ManifestParts,
): Promise<void> {
  const body: RunManifestBody = {
    name: o.config.name,
    updatedAt: new Date().toISOString(),
    status,
    backend: o.backend,
    dataset: {
      dir: path.resolve(o.prepared.dir),
      fingerprint: o.prepared.manifest.fingerprint,
      vocabSize: o.prepared.vocab.size,
    },
    features: parts.features,
    model: parts.model,
    best: parts.best,
    ...parts.extra,
    files: RUN_FILES,
    /** Per-dimension (vector) or per-channel (grid) mean/std of the training features, stored with the weights. */
    featureNorm: { file: 'best/weights.json', mean: 'norm/mean', std: 'norm/std' },
    metrics: parts.metrics,
  };
  await guardWrite(path.join(out, 'manifest.json'), () => writeRunManifest(out, body));
}

/** Config keys that define the run and so cannot change on --resume (prefix match; `.out` locations may move). */
const FROZEN = [
  'model.',
  'dataset.',
  'prep.',
  'encoder.',
  'features.dtype',
  'train.seed',
  'train.batchSize',
  'train.limit',
];
const MOVABLE = ['prep.out', 'features.out'];
/** Settings only a new run reads (how the weights were drawn): --resume keeps the run's own, whatever the config says. */
const CREATION_ONLY = ['model.init'];
/**
 * Settings added after runs were first recorded, with the value such a run really had when it differs from
 * today's default: an older run's config.yaml without them reads as these, not as the defaults.
 */
const LEGACY: Record<string, unknown> = { 'model.init': 'keras', 'train.labelSmoothing': 0, 'train.warmupSteps': 0 };

/** `recorded` with each LEGACY setting it lacks filled in (a copy; non-objects are returned as they are). */
function withLegacy(recorded: unknown): unknown {
  if (!recorded || typeof recorded !== 'object' || Array.isArray(recorded)) return recorded;
  const out = structuredClone(recorded) as Record<string, unknown>;
  for (const [key, value] of Object.entries(LEGACY)) {
    const [section, name] = key.split('.');
    const s = out[section];
    if (s === undefined) out[section] = { [name]: value };
    else if (s && typeof s === 'object' && !Array.isArray(s) && !(name in s))
      (s as Record<string, unknown>)[name] = value;
  }
  return out;
}
/** Training settings that --resume applies (and logs) when they change. */
const APPLIED = [
  'train.epochs',
  'train.learningRate',
  'train.clipNorm',
  'train.patience',
  'train.lrDecay.',
  'train.workers',
  'train.labelSmoothing',
  'train.warmupSteps',
];

function leaves(v: unknown, prefix = '', out = new Map<string, string>()): Map<string, string> {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) leaves(x, prefix ? `${prefix}.${k}` : k, out);
  } else if (v !== undefined && v !== null) out.set(prefix, JSON.stringify(v));
  return out;
}

/**
 * A run's recorded config.yaml as today's schema reads it: keys renamed since under their new names
 * (features.shardBytes -> features.chunkBytes), settings added since as what the run had (LEGACY) or their
 * defaults (e.g. model.type of a run made before it existed). `config` is the schema's parse, or the raw
 * object where today's schema refuses it. null when the run has no config.yaml.
 */
async function readRecordedConfig(out: string): Promise<{ file: string; config: unknown } | null> {
  const file = path.join(out, 'config.yaml');
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch {
    return null;
  }
  try {
    const recorded = withLegacy(renameDeprecatedKeys(YAML.parse(text) as unknown).raw);
    const filled = ConfigSchema.safeParse(recorded);
    return { file, config: filled.success ? filled.data : recorded };
  } catch (e) {
    throw new DataError(`${file}: cannot parse the run's recorded config: ${(e as Error).message}`);
  }
}

/**
 * The recipe a run recorded in its config.yaml (model.init, train.labelSmoothing, train.warmupSteps), each
 * value as the schema accepts it; a run recorded before these settings existed, a run without config.yaml
 * (made before it was kept) and a value the schema refuses or 'auto' (a hand-edited file) read as what such
 * a run had (LEGACY: keras, 0, 0).
 */
export async function recordedRecipe(out: string): Promise<Recipe> {
  const c = (await readRecordedConfig(out))?.config as
    | { model?: { init?: unknown }; train?: { labelSmoothing?: unknown; warmupSteps?: unknown } }
    | undefined;
  const read = <T>(schema: { safeParse(v: unknown): { success: boolean; data?: T } }, v: unknown, legacy: unknown) => {
    const r = schema.safeParse(v);
    return (r.success && r.data !== 'auto' ? r.data : legacy) as Exclude<T, 'auto'>;
  };
  return {
    init: read(ModelSchema.shape.init, c?.model?.init, LEGACY['model.init']),
    labelSmoothing: read(TrainSchema.shape.labelSmoothing, c?.train?.labelSmoothing, LEGACY['train.labelSmoothing']),
    warmupSteps: read(TrainSchema.shape.warmupSteps, c?.train?.warmupSteps, LEGACY['train.warmupSteps']),
  };
}

/**
 * Compare the config of a resumed cross-entropy run with the one it recorded (config.yaml): refuses changes
 * to FROZEN settings, returns the changed APPLIED ones (other keys, such as eval or serve settings, do not
 * affect training and are recorded as given). CREATION_ONLY settings are never refused: the caller puts the
 * run's own (recordedRecipe) in `config`.
 */
export async function checkResumeConfig(out: string, config: Config): Promise<SettingChange[]> {
  const recorded = await readRecordedConfig(out);
  if (!recorded) return []; // no recorded config: nothing to compare with
  const { file } = recorded;
  const before = leaves(recorded.config);
  const now = leaves(config);
  const keys = [...new Set([...before.keys(), ...now.keys()])].filter((k) => before.get(k) !== now.get(k)).sort();
  const show = (v: string | undefined) => (v === undefined ? '(unset)' : v);
  // another decoder type's own section (e.g. model.attention of a merge run) does not define this run
  const unused = Object.keys(DECODERS)
    .filter((t) => t !== config.model.type)
    .map((t) => `model.${t}.`);
  const frozen = keys.filter(
    (k) =>
      FROZEN.some((f) => k === f || k.startsWith(f)) &&
      !MOVABLE.includes(k) &&
      !CREATION_ONLY.includes(k) &&
      !unused.some((u) => k.startsWith(u)),
  );
  if (frozen.length) {
    const list = frozen.map((k) => `${k}: ${show(before.get(k))} -> ${show(now.get(k))}`).join(', ');
    throw new UsageError(
      `--resume: ${list} cannot change during a run (see ${file}); restore the setting, or start a new run in another folder`,
    );
  }
  return keys
    .filter((k) => APPLIED.some((a) => k === a || k.startsWith(a)))
    .map((k) => ({
      key: k,
      from: JSON.parse(before.get(k) ?? 'null'),
      to: JSON.parse(now.get(k) ?? 'null'),
      epoch: 0,
      step: 0,
    }));
}

/**
 * The cross-entropy checkpoint in last/ for --resume: its state (checked against the dataset, feature
 * cache, vocabulary, decoder type and spec), its model and the history up to it.
 */
export async function loadCheckpoint<R extends { epoch: number }>(
  out: string,
  type: string,
  spec: Record<string, unknown>,
  dsFp: string,
  featFp: string,
  prepared: Prepared,
) {
  const lastDir = path.join(out, 'last');
  const raw = await readState<RunState & { bestValLoss: number | null }>(
    out,
    'captioner.train-state',
    (file) => new ModelError(`${file}: not a training checkpoint`),
  );
  const state: RunState = { ...raw, bestValLoss: raw.bestValLoss ?? Infinity };
  checkFingerprints(state, dsFp, featFp);
  const vfile = path.join(out, 'vocab.json');
  const savedVocab = await fs.readFile(vfile, 'utf8').catch(() => null);
  if (savedVocab !== null && savedVocab !== serializeVocab(prepared.vocab)) {
    throw new DataError(`--resume: ${vfile} differs from the prepared vocabulary; start a new run`);
  }
  const was = state.type ?? 'merge';
  if (was !== type)
    throw new ModelError(
      `--resume: the checkpoint is a ${was} model, the config asks for ${type}; start a new run or restore model.type`,
    );
  const keys = [...new Set([...Object.keys(spec), ...Object.keys(state.spec ?? {})])];
  const differ = keys.filter((k) => k !== 'dropout' && JSON.stringify(spec[k]) !== JSON.stringify(state.spec?.[k]));
  if (differ.length) {
    const show = (v: unknown) => (v === undefined ? '(unset)' : JSON.stringify(v));
    throw new ModelError(
      `--resume: the model settings differ from the checkpoint (${differ.map((k) => `${k}: ${show(state.spec?.[k])} -> ${show(spec[k])}`).join(', ')}); start a new run or restore the settings`,
    );
  }
  const model = await loadDecoder(lastDir);
  if (model.type !== type) {
    model.dispose();
    throw new ModelError(
      `--resume: ${lastDir} holds a ${model.type} model, the config asks for ${type}; start a new run`,
    );
  }
  const history = await readHistory<R>(out, state.epoch);
  log.info(`resuming ${out} at epoch ${state.epoch + 1}, batch ${state.batchInEpoch}, step ${state.step}`);
  return { state, model, history };
}
