// A training run: Adam + clipping over whole-caption batches, validation every epoch, best/last
// checkpoints, early stopping, learning-rate decay on plateau, exact --resume (weights, Adam moments,
// epoch, step, position in the epoch) and a clean stop on interrupt. Writes the run folder:
//   best/ (weights.json, weights.bin)      the model to caption with (lowest validation loss)
//   last/ (weights + optimizer + state.json) the checkpoint --resume continues from
//   vocab.json, config.yaml, manifest.json, history.jsonl, loss.svg
// With no validation data there is no validation loss: early stopping, learning-rate decay and best-model
// selection are off and best/ holds the last epoch's weights. On --resume, settings that define the run
// (model, data, features, seed, batch size, limit) must match the run's config.yaml; training settings
// (epochs, learning rate, clipping, patience, decay, workers) may change and are applied, logged and recorded.
// train.workers > 1 trains with the data-parallel engine (src/train/parallel): worker threads compute the
// gradients and own the weights and Adam moments; the main-thread model gets a copy before validation and
// saving, and the optimizer checkpoint keeps the same format, so --resume works across worker counts.
// The run folder's checkpoints and --resume checks live in checkpoint.ts; the epoch loop (early stopping,
// learning-rate decay, Ctrl-C, checkpoints every epoch) in loop.ts, shared with self-critical fine-tuning; the
// step (one interface for the main thread and the workers) in trainer.ts; this file is the cross-entropy mode:
// its setup, its step and its validation.
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { tf } from '../tf/tf.js';
import { DataError, ModelError } from '../errors.js';
import { log } from '../log.js';
import type { Config } from '../config/schema.js';
import type { Prepared } from '../prep/prepared.js';
import { checkStageFolder } from '../util/stagedir.js';
import { rng } from '../util/random.js';
import { decoderFeatureShape } from '../model/decoders/batch.js';
import { decoderKind, resolveRecipe, specForConfig, type Decoder, type Recipe } from '../model/decoders/index.js';
import { RUN_KIND, RUN_NAMES } from '../model/runfolder.js';
import { defaultBlasThreads, addonActive } from '../tf/addon.js';
import {
  checkResumeConfig,
  finiteOrNull,
  loadCheckpoint,
  readOptimizer,
  recordedRecipe,
  recoverCheckpoints,
  refuseExistingRun,
  saveBest,
  saveLast as saveLastCheckpoint,
  saveRunConfig,
  startRunFolder,
  writeHistory,
  writeManifest as writeRunManifest,
  type ManifestParts,
  type RunState,
  type SettingChange,
} from './checkpoint.js';
import { isImprovement, warmupFactor } from './schedule.js';
import { runEpochs, yieldToEvents, type TrainingMode } from './loop.js';
import { createTrainer, type Trainer } from './trainer.js';
import { resolveWorkers } from './parallel/trainer.js';
import type { ReplicaKind, ReplicaSpec } from './parallel/replica.js';
import {
  batchesOf,
  buildBatch,
  checkFeatureCoverage,
  examplesOf,
  mixSeed,
  type Example,
  type FeatureSource,
} from './data.js';
import { lossChart } from './chart.js';

export { yieldToEvents } from './loop.js';

export type { SettingChange } from './checkpoint.js';

/** What the feature cache says about itself; copied into the model manifest. */
export interface FeatureInfo {
  dir: string;
  fingerprint: string;
  /** The dataset fingerprint the cache was built from, when it records one. */
  datasetFingerprint?: string;
  encoder: unknown;
  shape: number[];
  dtype: string;
}

export interface TrainOptions {
  config: Config;
  prepared: Prepared;
  features: FeatureSource;
  featureInfo: FeatureInfo;
  out: string;
  resume?: boolean;
  /** The backend actually running (for the manifest). */
  backend: string;
  /** Abort to stop at the next step boundary: a checkpoint is saved and the run returns `interrupted`. */
  signal?: AbortSignal;
  /** Called after every optimizer step with the total step count (progress reporting, hooks). */
  onStep?: (step: number) => void;
}

export interface EpochRecord {
  epoch: number;
  trainLoss: number;
  /** NaN (null in history.jsonl) when there is no validation data. */
  valLoss: number;
  learningRate: number;
  steps: number;
  tokens: number;
  seconds: number;
  tokensPerSecond: number;
  best: boolean;
}

export interface TrainResult {
  status: 'completed' | 'early-stopped' | 'interrupted';
  epochs: number;
  steps: number;
  /** The epoch whose weights are in best/ (the last epoch when there is no validation data). */
  bestEpoch: number;
  /** null when there is no validation data. */
  bestValLoss: number | null;
  history: EpochRecord[];
  out: string;
}

export async function train(o: TrainOptions): Promise<TrainResult> {
  const { prepared, features, out } = o;
  let config = o.config;
  const tc = config.train;
  const dsFp = prepared.manifest.fingerprint;
  if (o.featureInfo.datasetFingerprint && o.featureInfo.datasetFingerprint !== dsFp) {
    throw new DataError(
      `${o.featureInfo.dir}: the feature cache was built from another prepared dataset (fingerprint ${o.featureInfo.datasetFingerprint.slice(0, 12)}, ${prepared.dir} has ${dsFp.slice(0, 12)}); run \`captioner features\` again`,
    );
  }
  checkFeatureCoverage(prepared.splits.train, features, 'train', o.featureInfo.dir);
  checkFeatureCoverage(prepared.splits.val, features, 'val', o.featureInfo.dir);
  const trainEx = examplesOf(prepared.splits.train, tc.limit);
  const valEx = examplesOf(prepared.splits.val);
  if (!trainEx.length) throw new DataError(`${prepared.dir}: no training captions`);
  const featureShape = decoderFeatureShape(o.featureInfo.shape, o.featureInfo.dir);
  if (featureShape.reduce((a, b) => a * b, 1) !== features.dim) {
    throw new DataError(
      `${o.featureInfo.dir}: the feature cache says [${o.featureInfo.shape.join(', ')}] per image but holds ${features.dim} values per image`,
    );
  }
  const { kind, spec: specAny } = specForModel(config, prepared.vocab.size, featureShape, o.featureInfo);
  const spec = specAny as Record<string, unknown> & { vocabSize: number };

  const lastDir = path.join(out, 'last');
  await checkStageFolder(out, { kind: RUN_KIND, option: '--out or train.out', ownNames: RUN_NAMES });
  await recoverCheckpoints(out);
  let state: RunState;
  let model: Decoder;
  let history: EpochRecord[] = [];
  let changed: SettingChange[] = [];
  let recipe: Recipe;
  if (o.resume) {
    // the run's own recipe: its init always (the weights exist), its smoothing and warm-up where the config says auto
    const own = await recordedRecipe(out);
    if (config.model.init !== 'auto' && config.model.init !== own.init)
      log.info(
        `resume: model.init ${config.model.init} only applies to a new run; this run's weights were drawn the ${own.init} way, and config.yaml keeps saying so`,
      );
    recipe = { ...resolveRecipe(config.model, config.train, own), init: own.init };
    config = withRecipe(config, recipe);
    changed = await checkResumeConfig(out, config);
    ({ state, model, history } = await loadCheckpoint<EpochRecord>(
      out,
      kind.type,
      spec,
      dsFp,
      o.featureInfo.fingerprint,
      prepared,
    ));
    for (const c of changed) {
      c.epoch = state.epoch + 1;
      c.step = state.step;
      if (c.key === 'train.learningRate') state.learningRate = tc.learningRate;
      log.info(
        `resume: ${c.key} ${JSON.stringify(c.from)} -> ${JSON.stringify(c.to)}, applied from step ${state.step + 1}`,
      );
    }
    state.changes = [...(state.changes ?? []), ...changed];
  } else {
    await refuseExistingRun(out);
    // one streaming pass: a generator, so the training split is never held in memory at once
    const trainImages = uniqueImages(trainEx);
    const norm = kind.featureNorm(
      spec,
      (function* () {
        for (const k of trainImages) yield features.get(k);
      })(),
    );
    // config.yaml records the recipe used ('auto' resolved: a later default cannot change what this run was)
    recipe = resolveRecipe(config.model, config.train);
    config = withRecipe(config, recipe);
    model = kind.create(spec, kind.initialWeights(spec, tc.seed, recipe.init), norm);
    state = {
      kind: 'captioner.train-state',
      epoch: 0,
      batchInEpoch: 0,
      step: 0,
      learningRate: tc.learningRate,
      bestValLoss: Infinity,
      bestEpoch: 0,
      sinceBest: 0,
      sinceDecay: 0,
      epochLossSum: 0,
      epochTokens: 0,
      epochSeconds: 0,
      datasetFingerprint: dsFp,
      featureFingerprint: o.featureInfo.fingerprint,
      type: kind.type,
      spec,
      seed: tc.seed,
      batchSize: tc.batchSize,
    };
  }
  const workers = resolveWorkers(tc.workers);
  if (o.resume && (state.workers ?? 1) !== workers) {
    log.warn(
      `resume: the checkpoint was trained on ${state.workers ?? 1} worker${(state.workers ?? 1) === 1 ? '' : 's'}, this run uses ${workers}: training continues from the same weights and optimizer state, but dropout masks are drawn per worker slice, so the result is not byte-identical to an uninterrupted run`,
    );
  }
  state.workers = workers;
  let trainer: Trainer | null = null;
  try {
    // workers 1: the model's own variables on the main thread's backend; more: worker threads own weights and moments
    trainer = await createTrainer({
      kind: kind.type as ReplicaKind,
      spec: spec as unknown as ReplicaSpec,
      norm: model.norm,
      model,
      workers,
      learningRate: state.learningRate, // each step applies the warm-up factor (mode.step)
      clipNorm: tc.clipNorm,
      labelSmoothing: recipe.labelSmoothing,
    });
    logEngine(workers, tc.workers, o.backend);
    if (o.resume) {
      const { iterations, arrays } = await readOptimizer(out);
      trainer.restore(iterations, state.learningRate, arrays);
    }
    await startRunFolder(out, prepared);
    const t = trainer;
    const saveLast = async () => {
      t.copyTo(model);
      await saveLastCheckpoint(out, model, await t.state(), { ...state, bestValLoss: finiteOrNull(state.bestValLoss) });
    };
    // settings changed on --resume go into the checkpoint before config.yaml records them, so a kill in
    // between never leaves a config.yaml that the next --resume would believe but not apply
    if (changed.length) await saveLast();
    await saveRunConfig(out, config);
    const writeManifest = async (status: TrainResult['status'] | 'running') => {
      await writeRunManifest(out, o, status, manifestParts(o, kind.type, spec, state, history, valEx.length > 0));
    };

    const batchSize = state.batchSize;
    const validation = valEx.length > 0;
    if (!validation)
      log.warn(
        `${prepared.dir}: the validation split is empty: no validation loss, so early stopping, learning-rate decay and best-model selection are off; best/ will hold the last epoch's weights`,
      );
    log.info(
      `train: ${kind.type} decoder; ${trainEx.length} captions (${uniqueImages(trainEx).length} images), val ${valEx.length} captions; vocabulary ${spec.vocabSize}; batch ${batchSize}; epochs ${state.epoch + 1}..${tc.epochs}; init ${recipe.init}${recipe.labelSmoothing > 0 ? `, label smoothing ${recipe.labelSmoothing}` : ''}${recipe.warmupSteps > 0 ? `, warm-up ${recipe.warmupSteps} steps` : ''}`,
    );
    await writeManifest('running');

    const mode: TrainingMode<Example[]> = {
      label: 'epoch',
      epochs: tc.epochs,
      patience: tc.patience,
      lrDecay: tc.lrDecay,
      batches: (epoch) => batchesOf(trainEx, batchSize, rng(mixSeed(state.seed, epoch))),
      async step(examples, epoch) {
        const batch = buildBatch(examples, features);
        t.learningRate = state.learningRate * warmupFactor(state.step + 1, recipe.warmupSteps);
        const r = await t.step(batch, mixSeed(state.seed, state.step, 17));
        const loss = Number.isFinite(r.total) ? r.loss : r.total;
        if (!Number.isFinite(loss))
          throw new ModelError(
            `train: the loss became ${loss} at step ${state.step + 1} (epoch ${epoch}); lower train.learningRate or train.clipNorm`,
          );
        state.epochLossSum += loss * r.tokens;
        state.epochTokens += r.tokens;
      },
      progress: (secs) => ({
        loss: state.epochLossSum / state.epochTokens,
        'tok/s': Math.round(state.epochTokens / Math.max(secs, 1e-3)),
      }),
      async validate(epoch) {
        t.copyTo(model);
        const valLoss = validation
          ? await evaluateLoss(model, valEx, features, Math.max(batchSize, 64), o.signal)
          : NaN;
        if (valLoss === null) return 'interrupted';
        if (validation && !Number.isFinite(valLoss)) {
          throw new ModelError(
            `train: the validation loss became ${valLoss} after epoch ${epoch}; nothing of this epoch was saved (lower train.learningRate or train.clipNorm and continue with --resume)`,
          );
        }
        const trainLoss = state.epochLossSum / Math.max(1, state.epochTokens);
        const improved = isImprovement(state, valLoss, validation);
        const rec: EpochRecord = {
          epoch,
          trainLoss,
          valLoss,
          learningRate: state.learningRate,
          steps: state.step,
          tokens: state.epochTokens,
          seconds: state.epochSeconds,
          tokensPerSecond: state.epochTokens / Math.max(state.epochSeconds, 1e-3),
          best: improved,
        };
        history.push(rec);
        const valText = validation
          ? `val loss ${valLoss.toFixed(4)}${improved ? ' (best)' : ''}`
          : 'no validation data';
        log.info(
          `epoch ${epoch}: train loss ${trainLoss.toFixed(4)}, ${valText}, ${Math.round(rec.tokensPerSecond)} tokens/s`,
        );
        if (improved && validation) state.bestValLoss = valLoss;
        return { improved };
      },
      resetSums: () => {
        state.epochLossSum = 0;
        state.epochTokens = 0;
      },
      setLearningRate: (lr) => (t.learningRate = lr),
      stopMessage: () =>
        `early stopping: no validation improvement for ${state.sinceBest} epochs (best ${state.bestValLoss.toFixed(4)} at epoch ${state.bestEpoch})`,
      saveBest: () => saveBest(out, model),
      saveLast,
      writeHistory: () => writeHistory(out, history, historyChart(history)),
    };
    const status = await runEpochs(state, mode, { signal: o.signal, onStep: o.onStep, lastDir });
    await writeManifest(status);
    return {
      status,
      epochs: state.epoch,
      steps: state.step,
      bestEpoch: state.bestEpoch,
      bestValLoss: finiteOrNull(state.bestValLoss),
      history,
      out,
    };
  } finally {
    await trainer?.dispose();
    model.dispose();
  }
}

/** Says who computes the gradients (and, on the main thread of a multi-core machine, what train.workers could do). */
function logEngine(workers: number, asked: number | 'auto', backend: string): void {
  const lines = engineNotes({
    workers,
    asked,
    backend,
    native: addonActive(),
    cores: availableParallelism(),
    blasThreads: defaultBlasThreads(),
  });
  for (const l of lines.info) log.info(l);
  for (const l of lines.warn) log.warn(l);
}

/**
 * The log lines of logEngine. train.workers is suggested only where it can help: on wasm without the native
 * addon (one wasm thread per replica; with the addon the main thread's products already use every core):
 * measured 1.76x with 2 workers on 2 idle cores (docs/benchmarks.md). The log gives no figure: it depends on
 * the machine and on its other load.
 */
export function engineNotes(o: {
  workers: number;
  asked: number | 'auto';
  backend: string;
  native: boolean;
  cores: number;
  blasThreads: number;
}): { info: string[]; warn: string[] } {
  const info: string[] = [];
  const warn: string[] = [];
  if (o.workers > 1) {
    // while workers compute, OpenBLAS runs every product on its calling thread (src/tf/addon.ts shareBlasThreads)
    const blas = o.native ? ', matrix products on 1 OpenBLAS thread each' : '';
    info.push(
      `train: ${o.workers} worker threads x 1 wasm thread each compute the gradients (train.workers ${JSON.stringify(o.asked)}${blas}); the main thread (${o.backend}) validates and saves`,
    );
    if (!/^(wasm|cpu)/.test(o.backend))
      warn.push(
        `train.workers ${o.workers}: the workers compute on wasm, not on the ${o.backend} backend; set train.workers 1 to train there`,
      );
    if (o.workers > o.cores)
      warn.push(
        `train.workers ${o.workers} is more than this machine's ${o.cores} cores: the workers share them and each holds a copy of the model`,
      );
  } else if (/^wasm/.test(o.backend) && o.cores > 1) {
    if (o.native)
      info.push(
        `train: on the main thread; its matrix products use OpenBLAS on ${o.blasThreads} threads (this machine has ${o.cores} cores)`,
      );
    else
      info.push(
        `train: on the main thread (1 wasm thread) of this machine's ${o.cores} cores; train.workers auto splits each batch over ${o.cores} worker threads, which can train faster while those cores are otherwise idle (docs/benchmarks.md)`,
      );
  }
  return { info, warn };
}

/**
 * The decoder kind and spec for the config's model.type on features of `featureShape` (decoder side:
 * [D] or [P, C]). An attention model on a vector cache is a DataError saying which features to make; a
 * merge model on a grid cache mean-pools it (logged once).
 */
function specForModel(config: Config, vocabSize: number, featureShape: number[], info: FeatureInfo) {
  const type = config.model.type;
  const layer = (info.encoder as { layer?: unknown } | undefined)?.layer;
  const shown = `[${info.shape.join(', ')}]${typeof layer === 'string' ? ` (layer ${layer})` : ''}`;
  if (decoderKind(type).features === 'grid' && featureShape.length !== 2) {
    throw new DataError(
      `${info.dir}: model.type ${type} attends over a grid of image positions, but this feature cache holds one vector per image ${shown}; run \`captioner features\` with encoder.layer block5_conv3 (14x14, the paper's) or block5_pool (7x7, faster) into another features.out, and train on that`,
    );
  }
  const r = specForConfig(config.model, vocabSize, featureShape);
  if (r.kind.features === 'vector' && featureShape.length === 2) {
    log.info(
      `model: the ${type} decoder reads one vector per image; the ${shown} grid features are mean-pooled over their ${featureShape[0]} positions to ${featureShape[1]} channels`,
    );
  }
  return r;
}

/** Mean per-token validation cross-entropy (no dropout; regularisers such as the attention penalty left out); null when `signal` aborts first. */
export async function evaluateLoss(
  model: Decoder,
  examples: readonly Example[],
  features: FeatureSource,
  batchSize: number,
  signal?: AbortSignal,
): Promise<number | null> {
  let sum = 0;
  let n = 0;
  for (const b of batchesOf(examples, batchSize)) {
    await yieldToEvents();
    if (signal?.aborted) return null;
    const batch = buildBatch(b, features);
    const terms = model.lossTerms(batch, { training: false });
    try {
      sum += (await terms.crossEntropy.data())[0] * batch.targets.length;
      n += batch.targets.length;
    } finally {
      tf.dispose(Object.values(terms));
    }
  }
  return n ? sum / n : NaN;
}

function uniqueImages(ex: readonly Example[]): string[] {
  return [...new Set(ex.map((e) => e.image))];
}

/** loss.svg: training and validation loss per epoch. */
function historyChart(history: readonly EpochRecord[]): string {
  return lossChart([
    { label: 'training', color: '#1f77b4', points: history.map((h) => ({ x: h.epoch, y: h.trainLoss })) },
    { label: 'validation', color: '#d62728', points: history.map((h) => ({ x: h.epoch, y: h.valLoss })) },
  ]);
}

function manifestParts(
  o: TrainOptions,
  type: string,
  spec: Record<string, unknown>,
  state: RunState,
  history: EpochRecord[],
  validation: boolean,
): ManifestParts {
  const last = history[history.length - 1];
  return {
    features: {
      dir: path.resolve(o.featureInfo.dir),
      fingerprint: o.featureInfo.fingerprint,
      encoder: o.featureInfo.encoder,
      shape: o.featureInfo.shape,
      dtype: o.featureInfo.dtype,
    },
    model: { type, spec },
    /** What best/ holds: the lowest validation loss, or the last epoch when there is no validation data. */
    best: validation ? 'lowest-validation-loss' : 'last-epoch',
    /** Training settings changed on --resume (config.yaml records the latest values). */
    extra: { changes: state.changes ?? [] },
    metrics: {
      epochs: state.epoch,
      steps: state.step,
      bestEpoch: state.bestEpoch,
      bestValLoss: finiteOrNull(state.bestValLoss),
      lastTrainLoss: last ? last.trainLoss : null,
      lastValLoss: last ? finiteOrNull(last.valLoss) : null,
      learningRate: state.learningRate,
      tokensPerSecond: last ? last.tokensPerSecond : null,
    },
  };
}

/** `config` with its recipe settings replaced by `r` (what config.yaml records: never 'auto'). */
function withRecipe(config: Config, r: Recipe): Config {
  return {
    ...config,
    model: { ...config.model, init: r.init },
    train: { ...config.train, labelSmoothing: r.labelSmoothing, warmupSteps: r.warmupSteps },
  };
}
