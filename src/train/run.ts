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
import { promises as fs } from 'node:fs';
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { tf } from '../tf/tf.js';
import { DataError, ModelError, UsageError } from '../errors.js';
import { log, progress } from '../log.js';
import type { Config } from '../config/schema.js';
import type { Prepared } from '../prep/prepared.js';
import { serializeVocab } from '../prep/prepared.js';
import { ensureDir, exists, writeFailure, writeFileAtomic } from '../util/fsx.js';
import { checkStageFolder } from '../util/stagedir.js';
import { rng } from '../util/random.js';
import { ConfigSchema } from '../config/schema.js';
import { decoderFeatureShape, type CaptionBatch } from '../model/decoders/batch.js';
import { DECODERS, decoderKind, specForConfig, type Decoder } from '../model/decoders/index.js';
import { encodeTensors, readTensors, recoverDir } from '../model/io.js';
import { loadDecoder, RUN_FILES, RUN_KIND, RUN_NAMES, saveDecoder, writeRunConfig, writeRunManifest, writeRunVocab, type RunManifestBody } from '../model/runfolder.js';
import { Adam, byWeightName } from './adam.js';
import { createParallelTrainer, resolveWorkers, type ParallelTrainer } from './parallel/trainer.js';
import type { ReplicaKind, ReplicaSpec } from './parallel/replica.js';
import { batchesOf, buildBatch, checkFeatureCoverage, examplesOf, mixSeed, targetTokens, type Example, type FeatureSource } from './data.js';
import { lossChart } from './chart.js';

const OPT_FORMAT = 'captioner.adam';

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

/** A training setting changed on --resume (applied from `step` on). */
export interface SettingChange {
  key: string;
  from: unknown;
  to: unknown;
  epoch: number;
  step: number;
}

/** Resumable progress, saved in last/state.json. */
interface RunState {
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
  const bestDir = path.join(out, 'best');
  await checkStageFolder(out, { kind: RUN_KIND, option: '--out or train.out', ownNames: RUN_NAMES });
  for (const d of [lastDir, bestDir]) {
    const did = await guardWrite(d, () => recoverDir(d));
    if (did) log.warn(did);
  }
  let state: RunState;
  let model: Decoder;
  let history: EpochRecord[] = [];
  let changed: SettingChange[] = [];
  if (o.resume) {
    changed = await checkResumeConfig(out, config);
    ({ state, model, history } = await loadCheckpoint(out, kind.type, spec, dsFp, o.featureInfo.fingerprint, prepared));
    for (const c of changed) {
      c.epoch = state.epoch + 1;
      c.step = state.step;
      if (c.key === 'train.learningRate') state.learningRate = tc.learningRate;
      log.info(`resume: ${c.key} ${JSON.stringify(c.from)} -> ${JSON.stringify(c.to)}, applied from step ${state.step + 1}`);
    }
    state.changes = [...(state.changes ?? []), ...changed];
  } else {
    if (await exists(path.join(lastDir, 'state.json'))) {
      throw new UsageError(`${out}: already holds a training run; continue it with --resume, or choose another folder with --out`);
    }
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
      log.info(`train: ${workers} worker threads x 1 wasm thread each compute the gradients (train.workers ${JSON.stringify(tc.workers)}); the main thread (${o.backend}) validates and saves`);
      if (!/^(wasm|cpu)/.test(o.backend)) log.warn(`train.workers ${workers}: the workers compute on wasm, not on the ${o.backend} backend; set train.workers 1 to train there`);
      if (workers > availableParallelism()) log.warn(`train.workers ${workers} is more than this machine's ${availableParallelism()} cores: the workers share them and each holds a copy of the model`);
    } else {
      adam = new Adam(model.weights, { learningRate: state.learningRate, clipNorm: tc.clipNorm });
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
      const { meta, arrays } = await readTensors(lastDir, 'optimizer', OPT_FORMAT);
      optim.restore(Number(meta.iterations), state.learningRate, arrays);
    }
    await guardWrite(out, () => ensureDir(out));
    await guardWrite(path.join(out, RUN_FILES.vocab), () => writeRunVocab(out, serializeVocab(prepared.vocab)));
    const saveLast = async () => {
      optim.sync();
      const st = await optim.state();
      const opt = encodeTensors(OPT_FORMAT, { iterations: st.iterations, learningRate: st.learningRate }, st.arrays);
      const files = { 'optimizer.json': opt.index, 'optimizer.bin': opt.bin, 'state.json': JSON.stringify({ ...state, bestValLoss: finiteOrNull(state.bestValLoss) }, null, 1) + '\n' };
      await guardWrite(lastDir, () => saveDecoder(lastDir, model, files));
    };
    // settings changed on --resume go into the checkpoint before config.yaml records them, so a kill in
    // between never leaves a config.yaml that the next --resume would believe but not apply
    if (changed.length) await saveLast();
    await guardWrite(path.join(out, RUN_FILES.config), () => writeRunConfig(out, config));
    const writeManifest = async (status: TrainResult['status'] | 'running') => {
      const file = path.join(out, 'manifest.json');
      await guardWrite(file, () => writeRunManifest(out, manifestOf(o, kind.type, spec, state, history, status, valEx.length > 0)));
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
          const n = batch.targets.length;
          state.step++;
          state.batchInEpoch = bi + 1;
          state.epochLossSum += loss * n;
          state.epochTokens += n;
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
      const improved = valEx.length ? valLoss < state.bestValLoss - 1e-6 : true;
      const rec: EpochRecord = {
        epoch, trainLoss, valLoss, learningRate: state.learningRate, steps: state.step, tokens: state.epochTokens,
        seconds: state.epochSeconds, tokensPerSecond: state.epochTokens / Math.max(state.epochSeconds, 1e-3), best: improved,
      };
      history.push(rec);
      const valText = valEx.length ? `val loss ${valLoss.toFixed(4)}${improved ? ' (best)' : ''}` : 'no validation data';
      log.info(`epoch ${epoch}: train loss ${trainLoss.toFixed(4)}, ${valText}, ${Math.round(rec.tokensPerSecond)} tokens/s`);
      if (improved) {
        if (valEx.length) state.bestValLoss = valLoss;
        state.bestEpoch = epoch;
        state.sinceBest = 0;
        state.sinceDecay = 0;
        await guardWrite(bestDir, () => saveDecoder(bestDir, model));
      } else {
        state.sinceBest++;
        state.sinceDecay++;
      }
      state.epoch = epoch;
      state.batchInEpoch = 0;
      state.epochLossSum = 0;
      state.epochTokens = 0;
      state.epochSeconds = 0;
      let stop = false;
      if (!improved && tc.patience > 0 && state.sinceBest >= tc.patience) {
        log.info(`early stopping: no validation improvement for ${state.sinceBest} epochs (best ${state.bestValLoss.toFixed(4)} at epoch ${state.bestEpoch})`);
        stop = true;
      } else if (!improved && tc.lrDecay.patience > 0 && state.sinceDecay >= tc.lrDecay.patience && tc.lrDecay.factor < 1) {
        const next = Math.max(tc.lrDecay.min, state.learningRate * tc.lrDecay.factor);
        if (next < state.learningRate) {
          log.info(`learning rate ${state.learningRate.toPrecision(3)} -> ${next.toPrecision(3)}`);
          state.learningRate = next;
          optim.setLearningRate(next);
        }
        state.sinceDecay = 0;
      }
      await saveLast();
      await writeHistory(out, history);
      if (stop) {
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
      const where = state.epoch >= tc.epochs ? `all ${tc.epochs} epochs done` : `epoch ${state.epoch + 1}, batch ${state.batchInEpoch}`;
      log.info(`interrupted: checkpoint saved in ${lastDir} (${where}); continue with --resume`);
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

const finiteOrNull = (v: number) => (Number.isFinite(v) ? v : null);

/** One turn of the event loop, so signal handlers run during long stretches of awaited tensor reads. */
export const yieldToEvents = () => new Promise<void>((resolve) => setImmediate(resolve));

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
      if (n.startsWith(`${base}.`) && (n.includes(`.${process.pid}.`) || n.includes(`-${process.pid}-`)) && /\.tmp|\.new-/.test(n)) {
        await fs.rm(path.join(dir, n), { recursive: true, force: true }).catch(() => {});
      }
    }
    throw new DataError(`${target}: cannot write: ${reason}; nothing half-written was left (free some space and run again; --resume continues from the last saved checkpoint)`);
  }
}

/** Config keys that define the run and so cannot change on --resume (prefix match; `.out` locations may move). */
const FROZEN = ['model.', 'dataset.', 'prep.', 'encoder.', 'features.dtype', 'train.seed', 'train.batchSize', 'train.limit'];
const MOVABLE = ['prep.out', 'features.out'];
/** Training settings that --resume applies (and logs) when they change. */
const APPLIED = ['train.epochs', 'train.learningRate', 'train.clipNorm', 'train.patience', 'train.lrDecay.', 'train.workers'];

function leaves(v: unknown, prefix = '', out = new Map<string, string>()): Map<string, string> {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) leaves(x, prefix ? `${prefix}.${k}` : k, out);
  } else if (v !== undefined && v !== null) out.set(prefix, JSON.stringify(v));
  return out;
}

/**
 * Compare the config of a resumed run with the one it recorded (config.yaml): refuses changes to FROZEN
 * settings, returns the changed APPLIED ones (other keys, such as eval or serve settings, do not affect
 * training and are recorded as given).
 */
async function checkResumeConfig(out: string, config: Config): Promise<SettingChange[]> {
  const file = path.join(out, 'config.yaml');
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch {
    return []; // no recorded config: nothing to compare with
  }
  let before: Map<string, string>;
  try {
    const recorded = YAML.parse(text) as unknown;
    // settings added since the run started read as their defaults (e.g. model.type of a run made before it existed)
    const filled = ConfigSchema.safeParse(recorded);
    before = leaves(filled.success ? filled.data : recorded);
  } catch (e) {
    throw new DataError(`${file}: cannot parse the run's recorded config: ${(e as Error).message}`);
  }
  const now = leaves(config);
  const keys = [...new Set([...before.keys(), ...now.keys()])].filter((k) => before.get(k) !== now.get(k)).sort();
  const show = (v: string | undefined) => (v === undefined ? '(unset)' : v);
  // another decoder type's own section (e.g. model.attention of a merge run) does not define this run
  const unused = Object.keys(DECODERS).filter((t) => t !== config.model.type).map((t) => `model.${t}.`);
  const frozen = keys.filter((k) => FROZEN.some((f) => k === f || k.startsWith(f)) && !MOVABLE.includes(k) && !unused.some((u) => k.startsWith(u)));
  if (frozen.length) {
    const list = frozen.map((k) => `${k}: ${show(before.get(k))} -> ${show(now.get(k))}`).join(', ');
    throw new UsageError(`--resume: ${list} cannot change during a run (see ${file}); restore the setting, or start a new run in another folder`);
  }
  return keys
    .filter((k) => APPLIED.some((a) => k === a || k.startsWith(a)))
    .map((k) => ({ key: k, from: JSON.parse(before.get(k) ?? 'null'), to: JSON.parse(now.get(k) ?? 'null'), epoch: 0, step: 0 }));
}

async function loadCheckpoint(out: string, type: string, spec: Record<string, unknown>, dsFp: string, featFp: string, prepared: Prepared) {
  const lastDir = path.join(out, 'last');
  const sfile = path.join(lastDir, 'state.json');
  let raw: RunState & { bestValLoss: number | null };
  try {
    raw = JSON.parse(await fs.readFile(sfile, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UsageError(`--resume: ${code === 'ENOENT' ? `no checkpoint in ${out} (no last/state.json); start without --resume` : `${sfile}: cannot read: ${(e as Error).message}`}`);
  }
  if (raw?.kind !== 'captioner.train-state') throw new ModelError(`${sfile}: not a training checkpoint`);
  const state: RunState = { ...raw, bestValLoss: raw.bestValLoss ?? Infinity };
  if (state.datasetFingerprint !== dsFp) {
    throw new DataError(`--resume: the prepared dataset changed since this run started (fingerprint ${state.datasetFingerprint.slice(0, 12)} -> ${dsFp.slice(0, 12)}); start a new run`);
  }
  if (state.featureFingerprint !== featFp) {
    throw new DataError(`--resume: the feature cache changed since this run started (fingerprint ${state.featureFingerprint.slice(0, 12)} -> ${featFp.slice(0, 12)}); start a new run`);
  }
  const vfile = path.join(out, 'vocab.json');
  const savedVocab = await fs.readFile(vfile, 'utf8').catch(() => null);
  if (savedVocab !== null && savedVocab !== serializeVocab(prepared.vocab)) {
    throw new DataError(`--resume: ${vfile} differs from the prepared vocabulary; start a new run`);
  }
  const was = state.type ?? 'merge';
  if (was !== type) throw new ModelError(`--resume: the checkpoint is a ${was} model, the config asks for ${type}; start a new run or restore model.type`);
  const keys = [...new Set([...Object.keys(spec), ...Object.keys(state.spec ?? {})])];
  const differ = keys.filter((k) => k !== 'dropout' && JSON.stringify(spec[k]) !== JSON.stringify(state.spec?.[k]));
  if (differ.length) {
    const show = (v: unknown) => (v === undefined ? '(unset)' : JSON.stringify(v));
    throw new ModelError(`--resume: the model settings differ from the checkpoint (${differ.map((k) => `${k}: ${show(state.spec?.[k])} -> ${show(spec[k])}`).join(', ')}); start a new run or restore the settings`);
  }
  const model = await loadDecoder(lastDir);
  if (model.type !== type) {
    model.dispose();
    throw new ModelError(`--resume: ${lastDir} holds a ${model.type} model, the config asks for ${type}; start a new run`);
  }
  let history: EpochRecord[] = [];
  const hfile = path.join(out, 'history.jsonl');
  if (await exists(hfile)) {
    history = (await fs.readFile(hfile, 'utf8')).split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as EpochRecord).filter((r) => r.epoch <= state.epoch);
  }
  log.info(`resuming ${out} at epoch ${state.epoch + 1}, batch ${state.batchInEpoch}, step ${state.step}`);
  return { state, model, history };
}

async function writeHistory(out: string, history: EpochRecord[]): Promise<void> {
  const hfile = path.join(out, 'history.jsonl');
  await guardWrite(hfile, () => writeFileAtomic(hfile, history.map((h) => JSON.stringify(h)).join('\n') + '\n'));
  const svg = lossChart([
    { label: 'training', color: '#1f77b4', points: history.map((h) => ({ x: h.epoch, y: h.trainLoss })) },
    { label: 'validation', color: '#d62728', points: history.map((h) => ({ x: h.epoch, y: h.valLoss })) },
  ]);
  const chart = path.join(out, 'loss.svg');
  await guardWrite(chart, () => writeFileAtomic(chart, svg));
}

function manifestOf(o: TrainOptions, type: string, spec: Record<string, unknown>, state: RunState, history: EpochRecord[], status: string, validation: boolean): RunManifestBody {
  const last = history[history.length - 1];
  return {
    name: o.config.name,
    updatedAt: new Date().toISOString(),
    status,
    backend: o.backend,
    dataset: { dir: path.resolve(o.prepared.dir), fingerprint: o.prepared.manifest.fingerprint, vocabSize: o.prepared.vocab.size },
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
    changes: state.changes ?? [],
    files: RUN_FILES,
    /** Per-dimension (vector) or per-channel (grid) mean/std of the training features, stored with the weights. */
    featureNorm: { file: 'best/weights.json', mean: 'norm/mean', std: 'norm/std' },
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
