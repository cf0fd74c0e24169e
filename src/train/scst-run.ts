// A self-critical fine-tuning run (`captioner train --scst --init RUN`): starts from the best/ weights of a
// cross-entropy run of any decoder type and optimises the CIDEr-D reward with REINFORCE (src/train/scst.ts
// scstStep), its document frequencies built once from the TRAINING references (their own words, tokenized
// as eval tokenizes, not vocabulary-mapped ids). Each epoch ends with greedy decoding (beam 1) of the val
// split scored by CIDEr-D (src/eval/score.ts): best/ keeps the highest (starting with the init model's own
// score, epoch 0, so fine-tuning never leaves a worse best/), early stopping on it, exact --resume (weights,
// Adam moments, epoch, step; sampling seeds and the epoch's shuffle derive from them), and a clean stop on
// interrupt. Writes a run folder in the same format as train (src/model/runfolder.ts), whose manifest also
// says `fineTuned` (from which run, with which reward); history.jsonl holds per epoch the mean reward and
// the val CIDEr-D / BLEU-4, and loss.svg plots reward and val CIDEr-D. The checkpoints, history and
// manifest are read and written by src/train/checkpoint.ts, and the epochs run by src/train/loop.ts, as for
// cross-entropy runs; this file is the self-critical mode: its setup, its step and its validation.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { DataError, ModelError, UsageError } from '../errors.js';
import { log } from '../log.js';
import type { Config } from '../config/schema.js';
import type { Prepared } from '../prep/prepared.js';
import { serializeVocab } from '../prep/prepared.js';
import { checkStageFolder } from '../util/stagedir.js';
import { rng } from '../util/random.js';
import type { Decoder } from '../model/decoders/index.js';
import {
  loadDecoder,
  loadTrainedModel,
  RUN_KIND,
  RUN_NAMES,
  type RunFineTuning,
  type RunManifest,
} from '../model/runfolder.js';
import { CiderDReward, tokenize } from '../eval/metrics/index.js';
import { scoreCaptions } from '../eval/score.js';
import { decodeFeatures } from '../decode/decode.js';
import { Adam } from './adam.js';
import { batchesOf, checkFeatureCoverage, mixSeed, type FeatureSource } from './data.js';
import { lossChart } from './chart.js';
import {
  checkFingerprints,
  readHistory,
  readOptimizer,
  readState,
  recoverCheckpoints,
  refuseExistingRun,
  saveBest,
  saveLast as saveLastCheckpoint,
  saveRunConfig,
  startRunFolder,
  writeHistory,
  writeManifest as writeRunManifest,
  type ManifestParts,
} from './checkpoint.js';
import type { FeatureInfo } from './run.js';
import { runEpochs, yieldToEvents, type TrainingMode } from './loop.js';
import { scstStep, wordRewardFn } from './scst.js';

const STATE_KIND = 'captioner.scst-state';

export interface ScstRunOptions {
  config: Config;
  prepared: Prepared;
  features: FeatureSource;
  featureInfo: FeatureInfo;
  /** The cross-entropy run to start from (its best/ weights). */
  init: string;
  out: string;
  resume?: boolean;
  backend: string;
  /** Abort to stop at the next step boundary: a checkpoint is saved and the run returns `interrupted`. */
  signal?: AbortSignal;
  /** Called after every optimizer step with the total step count. */
  onStep?: (step: number) => void;
}

export interface ScstEpochRecord {
  /** 0: the init model before fine-tuning (no reward, no steps). */
  epoch: number;
  /** Mean reward of the sampled captions over the epoch (null for epoch 0). */
  reward: number | null;
  /** Corpus CIDEr-D and BLEU-4 of greedy captions of the val split (null without val data). */
  valCider: number | null;
  valBleu4: number | null;
  learningRate: number;
  steps: number;
  images: number;
  seconds: number;
  imagesPerSecond: number;
  best: boolean;
}

export interface ScstResult {
  status: 'completed' | 'early-stopped' | 'interrupted';
  epochs: number;
  steps: number;
  bestEpoch: number;
  /** Validation CIDEr-D of best/ (null without validation data). */
  bestValCider: number | null;
  /** Validation CIDEr-D of the init model (epoch 0). */
  initValCider: number | null;
  history: ScstEpochRecord[];
  out: string;
}

/** Resumable progress, saved in last/state.json. */
interface ScstState {
  kind: typeof STATE_KIND;
  epoch: number;
  batchInEpoch: number;
  step: number;
  learningRate: number;
  bestValCider: number | null;
  bestEpoch: number;
  sinceBest: number;
  epochRewardSum: number;
  epochImages: number;
  epochSeconds: number;
  datasetFingerprint: string;
  featureFingerprint: string;
  /** Settings that define the run: a --resume with others is refused. */
  frozen: {
    init: string;
    k: number;
    baseline: string;
    maxLength: number;
    bleuWeight: number;
    batchSize: number;
    seed: number;
    tokenize: string;
  };
}

/** `<init>-scst`: the default output folder of a fine-tuning run. */
export function defaultScstOut(init: string): string {
  return path.resolve(init).replace(/[\\/]+$/, '') + '-scst';
}

export async function trainScst(o: ScstRunOptions): Promise<ScstResult> {
  const { config, prepared, features, out } = o;
  const sc = config.train.scst;
  const tok = config.eval.tokenize;
  if (sc.baseline === 'mean' && sc.k < 2)
    throw new UsageError(
      `train.scst.k: the mean baseline needs at least 2 samples per image, got ${sc.k} (or set train.scst.baseline greedy)`,
    );
  if (await samePath(o.init, out))
    throw new UsageError(
      `${out}: is the run being fine-tuned (--init); refusing to write over it (choose another folder with --out)`,
    );
  await checkStageFolder(out, { kind: RUN_KIND, option: '--out', ownNames: RUN_NAMES });
  const lastDir = path.join(out, 'last');

  // the init run: its best/ weights, vocabulary and what it was trained on
  const init = await loadTrainedModel(o.init, 'best');
  let model: Decoder = init.decoder;
  const dsFp = prepared.manifest.fingerprint;
  try {
    const vocabText = serializeVocab(prepared.vocab);
    if (serializeVocab(init.vocab) !== vocabText)
      throw new DataError(
        `${o.init}: its vocabulary differs from the prepared dataset ${prepared.dir}; fine-tune on the dataset the run was trained on`,
      );
    if (init.manifest.dataset.fingerprint && init.manifest.dataset.fingerprint !== dsFp) {
      throw new DataError(
        `${o.init}: was trained on another prepared dataset (fingerprint ${init.manifest.dataset.fingerprint.slice(0, 12)}, ${prepared.dir} has ${dsFp.slice(0, 12)})`,
      );
    }
    if (init.manifest.features.fingerprint && init.manifest.features.fingerprint !== o.featureInfo.fingerprint) {
      throw new DataError(
        `${o.init}: was trained on another feature cache (fingerprint ${init.manifest.features.fingerprint.slice(0, 12)}, ${o.featureInfo.dir} has ${o.featureInfo.fingerprint.slice(0, 12)}); use the run's features.out`,
      );
    }
    checkFeatureCoverage(prepared.splits.train, features, 'train', o.featureInfo.dir);
    checkFeatureCoverage(prepared.splits.val, features, 'val', o.featureInfo.dir);
  } catch (e) {
    model.dispose();
    throw e;
  }
  const trainImages = prepared.splits.train.filter((im) => im.captions.length > 0);
  const valImages = prepared.splits.val.filter((im) => im.captions.length > 0);
  const frozen: ScstState['frozen'] = {
    init: path.resolve(o.init),
    k: sc.k,
    baseline: sc.baseline,
    maxLength: sc.maxLength,
    bleuWeight: sc.bleuWeight,
    batchSize: config.train.batchSize,
    seed: config.train.seed,
    tokenize: tok,
  };

  let state: ScstState;
  let history: ScstEpochRecord[] = [];
  try {
    if (!trainImages.length) throw new DataError(`${prepared.dir}: no training images`);
    await recoverCheckpoints(out);
    if (o.resume) {
      state = await readState<ScstState>(
        out,
        STATE_KIND,
        (file) =>
          new UsageError(
            `--resume: ${file} is not a self-critical training checkpoint (a cross-entropy run continues with \`captioner train --resume\`)`,
          ),
      );
      checkFingerprints(state, dsFp, o.featureInfo.fingerprint);
      checkFrozen(state, frozen, lastDir);
      const resumed = await loadDecoder(lastDir);
      model.dispose();
      model = resumed;
      if (model.type !== init.decoder.type)
        throw new ModelError(
          `--resume: ${lastDir} holds a ${model.type} model, ${o.init} a ${init.decoder.type} one; start a new run`,
        );
      history = await readHistory<ScstEpochRecord>(out, state.epoch);
      if (state.learningRate !== sc.learningRate) {
        log.info(
          `resume: train.scst.learningRate ${state.learningRate} -> ${sc.learningRate}, applied from step ${state.step + 1}`,
        );
        state.learningRate = sc.learningRate;
      }
      log.info(`resuming ${out} at epoch ${state.epoch + 1}, batch ${state.batchInEpoch}, step ${state.step}`);
    } else {
      await refuseExistingRun(out);
      state = {
        kind: STATE_KIND,
        epoch: 0,
        batchInEpoch: 0,
        step: 0,
        learningRate: sc.learningRate,
        bestValCider: null,
        bestEpoch: 0,
        sinceBest: 0,
        epochRewardSum: 0,
        epochImages: 0,
        epochSeconds: 0,
        datasetFingerprint: dsFp,
        featureFingerprint: o.featureInfo.fingerprint,
        frozen,
      };
    }
  } catch (e) {
    model.dispose();
    throw e;
  }

  const adam = new Adam(model.weights, { learningRate: state.learningRate, clipNorm: config.train.clipNorm });
  try {
    if (o.resume) {
      const { iterations, arrays } = await readOptimizer(out);
      adam.restore(iterations, state.learningRate, arrays);
    }
    await startRunFolder(out, prepared);
    await saveRunConfig(out, config);
    const saveLast = async () => saveLastCheckpoint(out, model, await adam.state(), state);
    const fineTuned: RunFineTuning = {
      method: 'scst',
      from: { dir: path.resolve(o.init), name: init.manifest.name, checkpoint: 'best', status: init.manifest.status },
      reward: {
        metric: sc.bleuWeight > 0 ? 'CIDEr-D + BLEU-4' : 'CIDEr-D',
        bleuWeight: sc.bleuWeight,
        documentFrequencies: 'training references',
        images: trainImages.length,
        tokenize: tok,
      },
      k: sc.k,
      baseline: sc.baseline,
      maxLength: sc.maxLength,
    };
    const writeManifest = async (status: string) => {
      await writeRunManifest(
        out,
        o,
        status,
        manifestParts(o, init.manifest, model, fineTuned, state, history, valImages.length > 0),
      );
    };

    // the reward: CIDEr-D document frequencies from the training references, built once
    const scorer = new CiderDReward(
      trainImages.map((im) => [im.image, im.captions.map((c) => tokenize(c, tok))] as const),
      { bleuWeight: sc.bleuWeight },
    );
    const rewardFn = wordRewardFn(scorer, prepared.vocab.tokens);
    const validate = async (): Promise<{ cider: number; bleu4: number } | null> => {
      if (!valImages.length) return null;
      const decoded = await decodeFeatures(
        { decoder: model, vocab: prepared.vocab },
        valImages.map((im) => features.get(im.image)),
        {
          beam: 1,
          maxLength: sc.maxLength,
          lengthPenalty: config.decode.lengthPenalty,
          alpha: config.decode.alpha,
          batchSize: config.decode.batchSize,
        },
      );
      const s = scoreCaptions(
        valImages.map((im, i) => ({ id: im.image, candidate: decoded[i].caption, references: im.captions })),
        tok,
      );
      return { cider: s.CIDEr, bleu4: s.Bleu_4 };
    };

    if (!valImages.length)
      log.warn(
        `${prepared.dir}: the validation split is empty: no validation CIDEr-D, so early stopping and best-model selection are off; best/ will hold the last epoch's weights`,
      );
    log.info(
      `scst: ${model.type} decoder from ${o.init}; ${trainImages.length} training images, ${valImages.length} val; ${config.train.batchSize} images x ${sc.k} samples a step, ${sc.baseline} baseline; epochs ${state.epoch + 1}..${sc.epochs}`,
    );
    if (!o.resume) {
      // epoch 0: the init model's own validation score, and its weights as the first best/
      const v = await validate();
      state.bestValCider = v ? v.cider : null;
      history.push({
        epoch: 0,
        reward: null,
        valCider: v?.cider ?? null,
        valBleu4: v?.bleu4 ?? null,
        learningRate: state.learningRate,
        steps: 0,
        images: 0,
        seconds: 0,
        imagesPerSecond: 0,
        best: true,
      });
      if (v) log.info(`epoch 0 (${o.init}): val CIDEr-D ${v.cider.toFixed(4)}, BLEU-4 ${v.bleu4.toFixed(4)}`);
      await saveBest(out, model);
      await saveLast();
      await writeHistory(out, history, historyChart(history));
    }
    await writeManifest('running');

    const batchSize = state.frozen.batchSize;
    const imageIds = trainImages.map((im) => im.image);
    const mode: TrainingMode<string[]> = {
      label: 'scst epoch',
      epochs: sc.epochs,
      patience: sc.patience,
      batches: (epoch) => batchesOf(imageIds, batchSize, rng(mixSeed(state.frozen.seed, epoch, 31))),
      async step(ids, epoch) {
        const r = await scstStep(
          model,
          adam,
          { features: ids.map((id) => features.get(id)), imageIds: ids },
          rewardFn,
          {
            k: sc.k,
            baseline: sc.baseline,
            maxLength: sc.maxLength,
            seed: mixSeed(state.frozen.seed, state.step, 29),
            start: prepared.vocab.start,
            end: prepared.vocab.end,
          },
        );
        if (!Number.isFinite(r.loss))
          throw new ModelError(
            `scst: the loss became ${r.loss} at step ${state.step + 1} (epoch ${epoch}); lower train.scst.learningRate`,
          );
        state.epochRewardSum += r.reward * r.images;
        state.epochImages += r.images;
      },
      progress: (secs) => ({
        reward: state.epochRewardSum / state.epochImages,
        'img/s': Math.round(state.epochImages / Math.max(secs, 1e-3)),
      }),
      async validate(epoch) {
        await yieldToEvents();
        // the checkpoint holds every step of this epoch; --resume validates
        if (o.signal?.aborted) return 'interrupted';
        const v = await validate();
        const improved = v ? state.bestValCider === null || v.cider > state.bestValCider + 1e-9 : true;
        const reward = state.epochRewardSum / Math.max(1, state.epochImages);
        const rec: ScstEpochRecord = {
          epoch,
          reward,
          valCider: v?.cider ?? null,
          valBleu4: v?.bleu4 ?? null,
          learningRate: state.learningRate,
          steps: state.step,
          images: state.epochImages,
          seconds: state.epochSeconds,
          imagesPerSecond: state.epochImages / Math.max(state.epochSeconds, 1e-3),
          best: improved,
        };
        history.push(rec);
        log.info(
          `epoch ${epoch}: mean reward ${reward.toFixed(4)}, ${v ? `val CIDEr-D ${v.cider.toFixed(4)}, BLEU-4 ${v.bleu4.toFixed(4)}${improved ? ' (best)' : ''}` : 'no validation data'}, ${rec.imagesPerSecond.toFixed(1)} images/s`,
        );
        if (improved && v) state.bestValCider = v.cider;
        return { improved };
      },
      resetSums: () => {
        state.epochRewardSum = 0;
        state.epochImages = 0;
      },
      setLearningRate: (lr) => (adam.learningRate = lr),
      stopMessage: () =>
        `early stopping: no higher validation CIDEr-D for ${state.sinceBest} epochs (best ${state.bestValCider?.toFixed(4)} at epoch ${state.bestEpoch})`,
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
      bestValCider: state.bestValCider,
      initValCider: history[0]?.valCider ?? null,
      history,
      out,
    };
  } finally {
    adam.dispose();
    model.dispose();
  }
}

async function samePath(a: string, b: string): Promise<boolean> {
  const real = async (p: string) => fs.realpath(p).catch(() => path.resolve(p));
  return (await real(a)) === (await real(b));
}

/** Settings that define the run (`frozen` in state.json) cannot change on --resume. */
function checkFrozen(state: ScstState, now: ScstState['frozen'], lastDir: string): void {
  const keys = Object.keys(now) as (keyof ScstState['frozen'])[];
  const differ = keys.filter((k) => state.frozen[k] !== now[k]);
  if (differ.length) {
    throw new UsageError(
      `--resume: ${differ.map((k) => `${k}: ${JSON.stringify(state.frozen[k])} -> ${JSON.stringify(now[k])}`).join(', ')} cannot change during a run (see ${path.join(lastDir, 'state.json')}); restore the setting, or start a new run in another folder`,
    );
  }
}

/** loss.svg: mean reward and validation CIDEr-D per epoch. */
function historyChart(history: readonly ScstEpochRecord[]): string {
  const nan = (v: number | null) => (v === null ? NaN : v);
  return lossChart(
    [
      { label: 'mean reward', color: '#1f77b4', points: history.map((h) => ({ x: h.epoch, y: nan(h.reward) })) },
      { label: 'val CIDEr-D', color: '#d62728', points: history.map((h) => ({ x: h.epoch, y: nan(h.valCider) })) },
    ],
    'Self-critical training',
    'epoch',
    'CIDEr-D',
  );
}

function manifestParts(
  o: ScstRunOptions,
  from: RunManifest,
  model: Decoder,
  fineTuned: RunFineTuning,
  state: ScstState,
  history: ScstEpochRecord[],
  validation: boolean,
): ManifestParts {
  const last = history[history.length - 1];
  return {
    features: { ...from.features, dir: path.resolve(o.featureInfo.dir) },
    model: { type: model.type, spec: { ...model.spec } },
    best: validation ? 'highest-validation-cider' : 'last-epoch',
    extra: { fineTuned },
    metrics: {
      epochs: state.epoch,
      steps: state.step,
      bestEpoch: state.bestEpoch,
      bestValCider: state.bestValCider,
      initValCider: history[0]?.valCider ?? null,
      lastReward: last?.reward ?? null,
      lastValCider: last?.valCider ?? null,
      learningRate: state.learningRate,
      imagesPerSecond: last && last.epoch > 0 ? last.imagesPerSecond : null,
    },
  };
}
