// A training run: Adam + clipping over whole-caption batches, validation every epoch, best/last
// checkpoints, early stopping, learning-rate decay on plateau, exact --resume (weights, Adam moments,
// epoch, step, position in the epoch) and a clean stop on interrupt. Writes the run folder:
//   best/ (weights.json, weights.bin)      the model to caption with (lowest validation loss)
//   last/ (weights + optimizer + state.json) the checkpoint --resume continues from
//   vocab.json, config.yaml, manifest.json, history.jsonl, loss.svg
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { tf } from '../tf/tf.js';
import { DataError, ModelError, UsageError } from '../errors.js';
import { log, progress } from '../log.js';
import type { Config } from '../config/schema.js';
import type { Prepared } from '../prep/prepared.js';
import { serializeVocab } from '../prep/prepared.js';
import { exists, writeFileAtomic, writeJsonAtomic } from '../util/fsx.js';
import { rng } from '../util/random.js';
import { CaptionDecoder, computeFeatureNorm } from '../model/decoder.js';
import { encodeTensors, loadDecoder, readTensors, saveDecoder } from '../model/io.js';
import { specFromConfig, type DecoderSpec } from '../model/spec.js';
import { Adam, byWeightName } from './adam.js';
import { batchesOf, buildBatch, checkFeatureCoverage, examplesOf, mixSeed, targetTokens, type Example, type FeatureSource } from './data.js';
import { lossChart } from './chart.js';

export const MODEL_KIND = 'captioner.model';
export const MODEL_VERSION = 1;
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
  /** Stop after this many steps in total (tests: simulate an interruption). */
  stopAfterSteps?: number;
}

export interface EpochRecord {
  epoch: number;
  trainLoss: number;
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
  bestEpoch: number;
  bestValLoss: number;
  history: EpochRecord[];
  out: string;
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
  spec: DecoderSpec;
  seed: number;
  batchSize: number;
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
  const spec = specFromConfig(config.model, prepared.vocab.size, features.dim);

  const lastDir = path.join(out, 'last');
  const bestDir = path.join(out, 'best');
  let state: RunState;
  let model: CaptionDecoder;
  let history: EpochRecord[] = [];
  if (o.resume) {
    ({ state, model, history } = await loadCheckpoint(out, spec, dsFp, o.featureInfo.fingerprint, prepared));
  } else {
    if (await exists(path.join(lastDir, 'state.json'))) {
      throw new UsageError(`${out}: already holds a training run; continue it with --resume, or choose another folder with --out`);
    }
    const norm = computeFeatureNorm(uniqueImages(trainEx).map((k) => features.get(k)), features.dim);
    model = CaptionDecoder.create(spec, tc.seed, norm);
    state = {
      kind: 'captioner.train-state', epoch: 0, batchInEpoch: 0, step: 0, learningRate: tc.learningRate,
      bestValLoss: Infinity, bestEpoch: 0, sinceBest: 0, sinceDecay: 0, epochLossSum: 0, epochTokens: 0, epochSeconds: 0,
      datasetFingerprint: dsFp, featureFingerprint: o.featureInfo.fingerprint, spec, seed: tc.seed, batchSize: tc.batchSize,
    };
  }
  const adam = new Adam(model.weights, { learningRate: state.learningRate, clipNorm: tc.clipNorm });
  try {
    if (o.resume) {
      const { meta, arrays } = await readTensors(lastDir, 'optimizer', OPT_FORMAT);
      adam.restore(Number(meta.iterations), state.learningRate, arrays);
    }
    await fs.mkdir(out, { recursive: true });
    await writeFileAtomic(path.join(out, 'vocab.json'), serializeVocab(prepared.vocab));
    await writeFileAtomic(path.join(out, 'config.yaml'), YAML.stringify(config));

    const saveLast = async () => {
      const st = await adam.state();
      const opt = encodeTensors(OPT_FORMAT, { iterations: st.iterations, learningRate: st.learningRate }, st.arrays);
      await saveDecoder(lastDir, model, { 'optimizer.json': opt.index, 'optimizer.bin': opt.bin, 'state.json': JSON.stringify({ ...state, bestValLoss: finiteOrNull(state.bestValLoss) }, null, 1) + '\n' });
    };
    const writeManifest = async (status: TrainResult['status'] | 'running') => {
      await writeJsonAtomic(path.join(out, 'manifest.json'), manifestOf(o, spec, state, history, status));
    };

    let status: TrainResult['status'] = 'completed';
    const batchSize = state.batchSize;
    if (o.resume && batchSize !== tc.batchSize) log.warn(`resume: keeping the run's batch size ${batchSize} (config says ${tc.batchSize})`);
    log.info(`train: ${trainEx.length} captions (${uniqueImages(trainEx).length} images), val ${valEx.length} captions; vocabulary ${spec.vocabSize}; batch ${batchSize}; epochs ${state.epoch + 1}..${tc.epochs}`);
    await writeManifest('running');
    epochs: for (let epoch = state.epoch + 1; epoch <= tc.epochs; epoch++) {
      const batches = batchesOf(trainEx, batchSize, rng(mixSeed(state.seed, epoch)));
      const bar = progress(`epoch ${epoch}/${tc.epochs}`, batches.length);
      if (state.batchInEpoch) bar.tick(state.batchInEpoch);
      let t0 = Date.now();
      try {
        for (let bi = state.batchInEpoch; bi < batches.length; bi++) {
          if (o.signal?.aborted || (o.stopAfterSteps !== undefined && state.step >= o.stopAfterSteps)) {
            state.epochSeconds += (Date.now() - t0) / 1000;
            t0 = Date.now();
            status = 'interrupted';
            break epochs;
          }
          const batch = buildBatch(batches[bi], features);
          const seed = mixSeed(state.seed, state.step, 17);
          const { value, grads } = tf.variableGrads(() => model.loss(batch, { training: true, seed }), model.variables);
          let loss: number;
          try {
            adam.apply(byWeightName(model.weights, grads)).dispose();
            loss = (await value.data())[0];
          } finally {
            tf.dispose([value, ...Object.values(grads)]);
          }
          if (!Number.isFinite(loss)) throw new ModelError(`train: the loss became ${loss} at step ${state.step + 1} (epoch ${epoch}); lower train.learningRate or train.clipNorm`);
          const n = batch.targets.length;
          state.step++;
          state.batchInEpoch = bi + 1;
          state.epochLossSum += loss * n;
          state.epochTokens += n;
          const secs = state.epochSeconds + (Date.now() - t0) / 1000;
          bar.tick(1, { loss: state.epochLossSum / state.epochTokens, 'tok/s': Math.round(state.epochTokens / Math.max(secs, 1e-3)) });
        }
      } finally {
        bar.stop();
      }
      state.epochSeconds += (Date.now() - t0) / 1000;
      const valLoss = valEx.length ? await evaluateLoss(model, valEx, features, Math.max(batchSize, 64)) : NaN;
      const trainLoss = state.epochLossSum / Math.max(1, state.epochTokens);
      const improved = Number.isFinite(valLoss) ? valLoss < state.bestValLoss - 1e-6 : true;
      const rec: EpochRecord = {
        epoch, trainLoss, valLoss, learningRate: state.learningRate, steps: state.step, tokens: state.epochTokens,
        seconds: state.epochSeconds, tokensPerSecond: state.epochTokens / Math.max(state.epochSeconds, 1e-3), best: improved,
      };
      history.push(rec);
      log.info(`epoch ${epoch}: train loss ${trainLoss.toFixed(4)}, val loss ${valLoss.toFixed(4)}${improved ? ' (best)' : ''}, ${Math.round(rec.tokensPerSecond)} tokens/s`);
      if (improved) {
        state.bestValLoss = Number.isFinite(valLoss) ? valLoss : trainLoss;
        state.bestEpoch = epoch;
        state.sinceBest = 0;
        state.sinceDecay = 0;
        await saveDecoder(bestDir, model);
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
          adam.learningRate = next;
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
        status = state.epoch < tc.epochs ? 'interrupted' : 'completed';
        break;
      }
    }
    if (status === 'interrupted') {
      await saveLast();
      log.info(`interrupted: checkpoint saved in ${lastDir} (epoch ${state.epoch + 1}, batch ${state.batchInEpoch}); continue with --resume`);
    }
    await writeManifest(status);
    return { status, epochs: state.epoch, steps: state.step, bestEpoch: state.bestEpoch, bestValLoss: state.bestValLoss, history, out };
  } finally {
    adam.dispose();
    model.dispose();
  }
}

/** Mean per-token validation cross-entropy (no dropout). */
export async function evaluateLoss(model: CaptionDecoder, examples: readonly Example[], features: FeatureSource, batchSize: number): Promise<number> {
  let sum = 0;
  let n = 0;
  for (const b of batchesOf(examples, batchSize)) {
    const batch = buildBatch(b, features);
    const l = model.loss(batch, { training: false });
    try {
      sum += (await l.data())[0] * batch.targets.length;
      n += batch.targets.length;
    } finally {
      l.dispose();
    }
  }
  return n ? sum / n : NaN;
}

function uniqueImages(ex: readonly Example[]): string[] {
  return [...new Set(ex.map((e) => e.image))];
}

const finiteOrNull = (v: number) => (Number.isFinite(v) ? v : null);

async function loadCheckpoint(out: string, spec: DecoderSpec, dsFp: string, featFp: string, prepared: Prepared) {
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
  const same = (Object.keys(spec) as (keyof DecoderSpec)[]).filter((k) => k !== 'dropout' && spec[k] !== state.spec[k]);
  if (same.length) {
    throw new ModelError(`--resume: the model settings differ from the checkpoint (${same.map((k) => `${k}: ${state.spec[k]} -> ${spec[k]}`).join(', ')}); start a new run or restore the settings`);
  }
  const model = await loadDecoder(lastDir);
  let history: EpochRecord[] = [];
  const hfile = path.join(out, 'history.jsonl');
  if (await exists(hfile)) {
    history = (await fs.readFile(hfile, 'utf8')).split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as EpochRecord).filter((r) => r.epoch <= state.epoch);
  }
  log.info(`resuming ${out} at epoch ${state.epoch + 1}, batch ${state.batchInEpoch}, step ${state.step}`);
  return { state, model, history };
}

async function writeHistory(out: string, history: EpochRecord[]): Promise<void> {
  await writeFileAtomic(path.join(out, 'history.jsonl'), history.map((h) => JSON.stringify(h)).join('\n') + '\n');
  const svg = lossChart([
    { label: 'training', color: '#1f77b4', points: history.map((h) => ({ x: h.epoch, y: h.trainLoss })) },
    { label: 'validation', color: '#d62728', points: history.map((h) => ({ x: h.epoch, y: h.valLoss })) },
  ]);
  await writeFileAtomic(path.join(out, 'loss.svg'), svg);
}

function manifestOf(o: TrainOptions, spec: DecoderSpec, state: RunState, history: EpochRecord[], status: string) {
  const last = history[history.length - 1];
  return {
    kind: MODEL_KIND,
    version: MODEL_VERSION,
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
    model: spec,
    files: {
      best: 'best/weights.json',
      last: 'last/weights.json',
      vocab: 'vocab.json',
      config: 'config.yaml',
      history: 'history.jsonl',
      chart: 'loss.svg',
    },
    /** Per-dimension mean/std of the training features, stored with the weights. */
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
