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
// The run folder's checkpoints and --resume checks live in checkpoint.ts; early stopping, learning-rate
// decay and the step/epoch bookkeeping in schedule.ts; this file runs the loop.
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { tf } from '../tf/tf.js';
import { DataError, ModelError } from '../errors.js';
import { log, progress } from '../log.js';
import type { Config } from '../config/schema.js';
import type { Prepared } from '../prep/prepared.js';
import { checkStageFolder } from '../util/stagedir.js';
import { rng } from '../util/random.js';
import { decoderFeatureShape, type CaptionBatch } from '../model/decoders/batch.js';
import { decoderKind, specForConfig, type Decoder } from '../model/decoders/index.js';
import { RUN_KIND, RUN_NAMES } from '../model/runfolder.js';
import { Adam, byWeightName } from './adam.js';
import { defaultBlasThreads, nativeActive } from '../tf/native.js';
import {
  checkResumeConfig, finiteOrNull, loadCheckpoint, logInterrupted, readOptimizer, recoverCheckpoints, refuseExistingRun, saveBest, saveLast as saveLastCheckpoint,
  saveRunConfig, startRunFolder, writeHistory, writeManifest as writeRunManifest, type ManifestParts, type RunState, type SettingChange,
} from './checkpoint.js';
import { countStep, endEpoch, isImprovement, nextStep } from './schedule.js';
import { createParallelTrainer, resolveWorkers, type ParallelTrainer } from './parallel/trainer.js';
import type { ReplicaKind, ReplicaSpec } from './parallel/replica.js';
import { batchesOf, buildBatch, checkFeatureCoverage, examplesOf, mixSeed, type Example, type FeatureSource } from './data.js';
import { lossChart } from './chart.js';

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
  const { config, prepared, features, out } = o;
  const tc = config.train;
  const dsFp = prepared.manifest.fingerprint;
  if (o.featureInfo.datasetFingerprint && o.featureInfo.datasetFingerprint !== dsFp) {
    throw new DataError(`${o.featureInfo.dir}: the feature cache was built from another prepared dataset (fingerprint ${o.featureInfo.datasetFingerprint.slice(0, 12)}, ${prepared.dir} has ${dsFp.slice(0, 12)}); run \`captioner features\` again`);
  }
  checkFeatureCoverage(prepared.splits.train, features, 'train', o.featureInfo.dir);
  checkFeatureCoverage(prepared.splits.val, features, 'val', o.featureInfo.dir);
  const trainEx = examplesOf(prepared.splits.train, tc.limit);
  const valEx = examplesOf(prepared.splits.val);
  if (!trainEx.length) throw new DataError(`${prepared.dir}: no training captions`);
  const featureShape = decoderFeatureShape(o.featureInfo.shape, o.featureInfo.dir);
  if (featureShape.reduce((a, b) => a * b, 1) !== features.dim) {
    throw new DataError(`${o.featureInfo.dir}: the feature cache says [${o.featureInfo.shape.join(', ')}] per image but holds ${features.dim} values per image`);
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
  if (o.resume) {
    changed = await checkResumeConfig(out, config);
    ({ state, model, history } = await loadCheckpoint<EpochRecord>(out, kind.type, spec, dsFp, o.featureInfo.fingerprint, prepared));
    for (const c of changed) {
      c.epoch = state.epoch + 1;
      c.step = state.step;
      if (c.key === 'train.learningRate') state.learningRate = tc.learningRate;
      log.info(`resume: ${c.key} ${JSON.stringify(c.from)} -> ${JSON.stringify(c.to)}, applied from step ${state.step + 1}`);
    }
    state.changes = [...(state.changes ?? []), ...changed];
  } else {
    await refuseExistingRun(out);
    // one streaming pass: a generator, so the training split is never held in memory at once
    const trainImages = uniqueImages(trainEx);
    const norm = kind.featureNorm(spec, (function* () {
      for (const k of trainImages) yield features.get(k);
    })());
    model = kind.create(spec, kind.initialWeights(spec, tc.seed), norm);
    state = {
      kind: 'captioner.train-state', epoch: 0, batchInEpoch: 0, step: 0, learningRate: tc.learningRate,
      bestValLoss: Infinity, bestEpoch: 0, sinceBest: 0, sinceDecay: 0, epochLossSum: 0, epochTokens: 0, epochSeconds: 0,
      datasetFingerprint: dsFp, featureFingerprint: o.featureInfo.fingerprint, type: kind.type, spec, seed: tc.seed, batchSize: tc.batchSize,
    };
  }
  const workers = resolveWorkers(tc.workers);
  if (o.resume && (state.workers ?? 1) !== workers) {
    log.warn(`resume: the checkpoint was trained on ${state.workers ?? 1} worker${(state.workers ?? 1) === 1 ? '' : 's'}, this run uses ${workers}: training continues from the same weights and optimizer state, but dropout masks are drawn per worker slice, so the result is not byte-identical to an uninterrupted run`);
  }
  state.workers = workers;
  // workers 1: tf Adam on the main thread's backend; more: the parallel engine owns weights and moments
  let adam: Adam | null = null;
  let trainer: ParallelTrainer | null = null;
  try {
    if (workers > 1) {
      const values: Record<string, Float32Array> = {};
      for (const [n, w] of Object.entries(model.weights)) values[n] = (await w.data()) as Float32Array;
      trainer = await createParallelTrainer({
        kind: kind.type as ReplicaKind, spec: spec as unknown as ReplicaSpec, weights: values, norm: model.norm,
        workers, learningRate: state.learningRate, clipNorm: tc.clipNorm,
      });
      const blas = nativeActive() ? `, matrix products on ${Math.max(1, Math.floor(defaultBlasThreads() / workers))} OpenBLAS thread(s) each` : '';
      log.info(`train: ${workers} worker threads x 1 wasm thread each compute the gradients (train.workers ${JSON.stringify(tc.workers)}${blas}); the main thread (${o.backend}) validates and saves`);
      if (!/^(wasm|cpu)/.test(o.backend)) log.warn(`train.workers ${workers}: the workers compute on wasm, not on the ${o.backend} backend; set train.workers 1 to train there`);
      if (workers > availableParallelism()) log.warn(`train.workers ${workers} is more than this machine's ${availableParallelism()} cores: the workers share them and each holds a copy of the model`);
    } else {
      adam = new Adam(model.weights, { learningRate: state.learningRate, clipNorm: tc.clipNorm });
      const cores = availableParallelism();
      if (/^wasm/.test(o.backend) && cores > 1) {
        if (nativeActive()) log.info(`train: on the main thread; its matrix products use OpenBLAS on ${defaultBlasThreads()} threads (this machine has ${cores} cores)`);
        else log.info(`train: on the main thread (1 wasm thread) of this machine's ${cores} cores; train.workers auto splits each batch over ${cores} worker threads (1.8x faster with 2 on 2 cores without the native addon, see the README's benchmarks)`);
      }
    }
    const optim = {
      state: async () => (trainer ? trainer.state() : adam!.state()),
      restore: (it: number, lr: number, arrays: Parameters<Adam['restore']>[2]) => (trainer ? trainer.restore(it, lr, arrays) : adam!.restore(it, lr, arrays)),
      setLearningRate: (lr: number) => {
        if (trainer) trainer.learningRate = lr;
        else adam!.learningRate = lr;
      },
      /** Bring the main-thread model up to the trained weights (validation, saving). */
      sync: () => trainer?.copyTo(model),
    };
    if (o.resume) {
      const { iterations, arrays } = await readOptimizer(out);
      optim.restore(iterations, state.learningRate, arrays);
    }
    await startRunFolder(out, prepared);
    const saveLast = async () => {
      optim.sync();
      await saveLastCheckpoint(out, model, await optim.state(), { ...state, bestValLoss: finiteOrNull(state.bestValLoss) });
    };
    // settings changed on --resume go into the checkpoint before config.yaml records them, so a kill in
    // between never leaves a config.yaml that the next --resume would believe but not apply
    if (changed.length) await saveLast();
    await saveRunConfig(out, config);
    const writeManifest = async (status: TrainResult['status'] | 'running') => {
      await writeRunManifest(out, o, status, manifestParts(o, kind.type, spec, state, history, valEx.length > 0));
    };

    let status: TrainResult['status'] = 'completed';
    const batchSize = state.batchSize;
    if (!valEx.length) log.warn(`${prepared.dir}: the validation split is empty: no validation loss, so early stopping, learning-rate decay and best-model selection are off; best/ will hold the last epoch's weights`);
    log.info(`train: ${kind.type} decoder; ${trainEx.length} captions (${uniqueImages(trainEx).length} images), val ${valEx.length} captions; vocabulary ${spec.vocabSize}; batch ${batchSize}; epochs ${state.epoch + 1}..${tc.epochs}`);
    await writeManifest('running');
    epochs: for (let epoch = state.epoch + 1; epoch <= tc.epochs; epoch++) {
      const batches = batchesOf(trainEx, batchSize, rng(mixSeed(state.seed, epoch)));
      const bar = progress(`epoch ${epoch}/${tc.epochs}`, batches.length);
      if (state.batchInEpoch) bar.tick(state.batchInEpoch);
      let t0 = Date.now();
      try {
        for (let bi = state.batchInEpoch; bi < batches.length; bi++) {
          await yieldToEvents(); // lets a Ctrl-C (a macrotask) be seen between steps
          if (o.signal?.aborted) {
            state.epochSeconds += (Date.now() - t0) / 1000;
            t0 = Date.now();
            status = 'interrupted';
            break epochs;
          }
          const batch = buildBatch(batches[bi], features);
          const seed = mixSeed(state.seed, state.step, 17);
          // the parallel engine reports the whole objective (cross-entropy plus any regulariser)
          const r = trainer ? await trainer.step(batch, seed).then((x) => ({ loss: x.loss, total: x.loss })) : await mainThreadStep(model, adam!, batch, seed);
          const loss = Number.isFinite(r.total) ? r.loss : r.total;
          if (!Number.isFinite(loss)) throw new ModelError(`train: the loss became ${loss} at step ${state.step + 1} (epoch ${epoch}); lower train.learningRate or train.clipNorm`);
          countStep(state, bi, loss, batch.targets.length);
          const secs = state.epochSeconds + (Date.now() - t0) / 1000;
          bar.tick(1, { loss: state.epochLossSum / state.epochTokens, 'tok/s': Math.round(state.epochTokens / Math.max(secs, 1e-3)) });
          o.onStep?.(state.step);
        }
      } finally {
        bar.stop();
      }
      state.epochSeconds += (Date.now() - t0) / 1000;
      optim.sync();
      const evaluated = valEx.length ? await evaluateLoss(model, valEx, features, Math.max(batchSize, 64), o.signal) : NaN;
      if (evaluated === null) {
        // interrupted during validation: the checkpoint holds every step of this epoch; --resume validates
        status = 'interrupted';
        break;
      }
      const valLoss = evaluated;
      if (valEx.length && !Number.isFinite(valLoss)) {
        throw new ModelError(`train: the validation loss became ${valLoss} after epoch ${epoch}; nothing of this epoch was saved (lower train.learningRate or train.clipNorm and continue with --resume)`);
      }
      const trainLoss = state.epochLossSum / Math.max(1, state.epochTokens);
      const improved = isImprovement(state, valLoss, valEx.length > 0);
      const rec: EpochRecord = {
        epoch, trainLoss, valLoss, learningRate: state.learningRate, steps: state.step, tokens: state.epochTokens,
        seconds: state.epochSeconds, tokensPerSecond: state.epochTokens / Math.max(state.epochSeconds, 1e-3), best: improved,
      };
      history.push(rec);
      const valText = valEx.length ? `val loss ${valLoss.toFixed(4)}${improved ? ' (best)' : ''}` : 'no validation data';
      log.info(`epoch ${epoch}: train loss ${trainLoss.toFixed(4)}, ${valText}, ${Math.round(rec.tokensPerSecond)} tokens/s`);
      endEpoch(state, epoch, improved, valLoss, valEx.length > 0);
      if (improved) await saveBest(out, model);
      const next = nextStep(state, improved, tc);
      if (next.stop) {
        log.info(`early stopping: no validation improvement for ${state.sinceBest} epochs (best ${state.bestValLoss.toFixed(4)} at epoch ${state.bestEpoch})`);
      } else if (next.decayed) {
        log.info(`learning rate ${next.decayed.from.toPrecision(3)} -> ${next.decayed.to.toPrecision(3)}`);
        optim.setLearningRate(next.decayed.to);
      }
      await saveLast();
      await writeHistory(out, history, historyChart(history));
      if (next.stop) {
        status = 'early-stopped';
        break;
      }
      if (o.signal?.aborted) {
        // honoured even after the last epoch: the user asked to stop, and the checkpoint is complete
        status = 'interrupted';
        break;
      }
    }
    if (status === 'interrupted') {
      await saveLast();
      logInterrupted(lastDir, state, tc.epochs);
    }
    await writeManifest(status);
    return { status, epochs: state.epoch, steps: state.step, bestEpoch: state.bestEpoch, bestValLoss: finiteOrNull(state.bestValLoss), history, out };
  } finally {
    adam?.dispose();
    await trainer?.dispose();
    model.dispose();
  }
}

/**
 * One step on the main thread (workers: 1): gradients of the whole objective, one Adam update. Returns the
 * cross-entropy (comparable with the validation loss) and the whole objective.
 */
async function mainThreadStep(model: Decoder, adam: Adam, batch: CaptionBatch, seed: number): Promise<{ loss: number; total: number }> {
  let ce: tf.Scalar | null = null;
  const { value, grads } = tf.variableGrads(() => {
    const terms = model.lossTerms(batch, { training: true, seed });
    const rest = Object.entries(terms).filter(([k]) => k !== 'crossEntropy').map(([, t]) => t);
    if (!rest.length) return terms.crossEntropy;
    ce = tf.keep(terms.crossEntropy);
    return tf.addN([terms.crossEntropy, ...rest]) as tf.Scalar;
  }, model.variables);
  try {
    adam.apply(byWeightName(model.weights, grads)).dispose();
    const total = (await value.data())[0];
    const loss = ce ? (await (ce as tf.Scalar).data())[0] : total;
    return { loss, total };
  } finally {
    tf.dispose([value, ...Object.values(grads)]);
    if (ce) (ce as tf.Scalar).dispose();
  }
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
    throw new DataError(`${info.dir}: model.type ${type} attends over a grid of image positions, but this feature cache holds one vector per image ${shown}; run \`captioner features\` with encoder.layer block5_conv3 (14x14, the paper's) or block5_pool (7x7, faster) into another features.out, and train on that`);
  }
  const r = specForConfig(config.model, vocabSize, featureShape);
  if (r.kind.features === 'vector' && featureShape.length === 2) {
    log.info(`model: the ${type} decoder reads one vector per image; the ${shown} grid features are mean-pooled over their ${featureShape[0]} positions to ${featureShape[1]} channels`);
  }
  return r;
}

/** Mean per-token validation cross-entropy (no dropout; regularisers such as the attention penalty left out); null when `signal` aborts first. */
export async function evaluateLoss(model: Decoder, examples: readonly Example[], features: FeatureSource, batchSize: number, signal?: AbortSignal): Promise<number | null> {
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

/** One turn of the event loop, so signal handlers run during long stretches of awaited tensor reads. */
export const yieldToEvents = () => new Promise<void>((resolve) => setImmediate(resolve));

/** loss.svg: training and validation loss per epoch. */
function historyChart(history: readonly EpochRecord[]): string {
  return lossChart([
    { label: 'training', color: '#1f77b4', points: history.map((h) => ({ x: h.epoch, y: h.trainLoss })) },
    { label: 'validation', color: '#d62728', points: history.map((h) => ({ x: h.epoch, y: h.valLoss })) },
  ]);
}

function manifestParts(o: TrainOptions, type: string, spec: Record<string, unknown>, state: RunState, history: EpochRecord[], validation: boolean): ManifestParts {
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
