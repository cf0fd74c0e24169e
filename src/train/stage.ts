// The training stages as commands and the demo call them (cross-entropy training, and self-critical
// fine-tuning of a trained run): opens the prepared dataset and feature cache
// named by the config (stagePaths), picks the backend, and trains into the run folder. Feature vectors
// are read through a bounded reader (features.readCacheBytes), never the whole split as float32.
// Before any heavy work each stage checks its output folder and takes its lock (src/util/lock.ts: one
// writer per run folder, released on every way out), and a --resume that asks for fewer epochs than the
// run has already done is refused before anything is read or rewritten.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { stagePaths } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { boundedFeatureSource, openFeatureCache } from '../features/cache.js';
import { loadPrepared, type Prepared } from '../prep/prepared.js';
import { initBackend, type BackendRequest } from '../tf/backend.js';
import { UsageError } from '../errors.js';
import { log } from '../log.js';
import { RUN_KIND, RUN_NAMES, readRunManifest } from '../model/runfolder.js';
import { checkStageFolder } from '../util/stagedir.js';
import { holderText, inspectLock, lockFolder, LOCK_NAME, type Lock } from '../util/lock.js';
import { train, type FeatureInfo, type TrainResult } from './run.js';
import type { FeatureSource } from './data.js';
import type { ScstResult } from './scst-run.js';

export interface TrainStageOptions {
  resume?: boolean;
  /** Aborting finishes the current step, saves a checkpoint and returns status 'interrupted'. */
  signal?: AbortSignal;
}

/** Prepared dataset + feature cache (from the config's paths) -> a trained run folder. */
export async function runTrain(config: Config, opts: TrainStageOptions = {}): Promise<TrainResult> {
  const paths = stagePaths(config);
  const lock = await lockRunFolder(paths.model, '--out or train.out');
  try {
    if (opts.resume) await checkResumeEpochs(paths.model, config.train.epochs, 'train.epochs (--epochs)');
    return await withTrainingData(config, (d) =>
      train({
        config,
        prepared: d.prepared,
        features: d.features,
        featureInfo: d.featureInfo,
        out: paths.model,
        resume: opts.resume,
        backend: d.backend,
        signal: opts.signal,
      }),
    );
  } finally {
    await lock.release();
  }
}

export interface ScstStageOptions extends TrainStageOptions {
  /** The cross-entropy run to fine-tune. */
  init: string;
  out: string;
}

/** A cross-entropy run + the config's prepared dataset and feature cache -> a self-critically fine-tuned run folder. */
export async function runScst(config: Config, opts: ScstStageOptions): Promise<ScstResult> {
  const { trainScst } = await import('./scst-run.js');
  await checkInitRun(opts.init);
  const lock = await lockRunFolder(opts.out, '--out');
  try {
    if (opts.resume) await checkResumeEpochs(opts.out, config.train.scst.epochs, 'train.scst.epochs (--epochs)');
    if (config.train.workers !== 1) {
      log.warn(
        `train.workers ${JSON.stringify(config.train.workers)} is not used by self-critical training: train --scst samples, scores and updates on the main thread (set train.workers 1 to silence this)`,
      );
    }
    return await withTrainingData(config, (d) =>
      trainScst({
        config,
        prepared: d.prepared,
        features: d.features,
        featureInfo: d.featureInfo,
        init: opts.init,
        out: opts.out,
        resume: opts.resume,
        backend: d.backend,
        signal: opts.signal,
      }),
    );
  } finally {
    await lock.release();
  }
}

/** Refuse a folder holding another stage's artifact, then take the run folder's lock (one writer at a time). */
async function lockRunFolder(out: string, option: string): Promise<Lock> {
  await checkStageFolder(out, { kind: RUN_KIND, option, ownNames: RUN_NAMES });
  return lockFolder(out, `run folder ${out}`);
}

/**
 * --resume with fewer epochs than the run has done would train nothing yet record the smaller number (and log
 * "epochs 6..2"): refused, saying how many the run has. `setting` names what sets the total.
 */
export async function checkResumeEpochs(out: string, epochs: number, setting: string): Promise<void> {
  let done: unknown;
  try {
    done = (JSON.parse(await fs.readFile(path.join(out, 'last', 'state.json'), 'utf8')) as { epoch?: unknown }).epoch;
  } catch {
    return; // no readable checkpoint: the run's own --resume checks say so
  }
  if (typeof done !== 'number' || done <= epochs) return;
  throw new UsageError(
    `--resume: ${out} has already trained ${done} epochs, and ${setting} asks for ${epochs} in total, so there is nothing to train; ` +
      `to train more, give the new total (e.g. --epochs ${done + 5}); the run is left as it is`,
  );
}

/**
 * The run SCST starts from must not be in training now: its best/ would change under us, and the fine-tuned
 * model would start from whichever epoch happened to be best at that moment. A run whose manifest still says
 * "running" but that no process holds (killed or crashed) is fine-tuned from its last complete best/, with a
 * warning: its checkpoints are written atomically, as for an interrupted run.
 */
async function checkInitRun(init: string): Promise<void> {
  const lock = await inspectLock(path.join(init, LOCK_NAME));
  if (lock.state === 'held') {
    const remote = lock.info && lock.info.host !== os.hostname();
    throw new UsageError(
      `--init ${init}: is being trained right now by ${holderText(lock.info)}; fine-tune it once that training has finished` +
        (remote || !lock.info ? ` (if that run is gone, delete ${path.join(init, LOCK_NAME)})` : ''),
    );
  }
  const manifest = await readRunManifest(init).catch(() => null); // a missing or broken run: trainScst says so
  if (manifest?.status === 'running') {
    const m = manifest.metrics ?? {};
    log.warn(
      `--init ${init}: its manifest says status "running", but no process is training it (it was killed or crashed after ${m.epochs ?? '?'} epochs); ` +
        `fine-tuning its best/ checkpoint (epoch ${m.bestEpoch ?? '?'}). To finish its training first: captioner train --resume --out ${init}`,
    );
  }
}

interface TrainingData {
  prepared: Prepared;
  features: FeatureSource;
  featureInfo: FeatureInfo;
  backend: string;
}

async function withTrainingData<T>(config: Config, use: (d: TrainingData) => Promise<T>): Promise<T> {
  const paths = stagePaths(config);
  const prepared = await loadPrepared(paths.prepared);
  const cache = await openFeatureCache(paths.features);
  try {
    const backend = await initBackend(config.backend as BackendRequest, { threads: config.threads });
    const m = cache.manifest;
    // vectors are held up to features.readCacheBytes (kept decoded when the train and val images fit as
    // float32, else as stored, least recently used dropped and read again from the chunk files)
    const needed = new Set([...prepared.splits.train, ...prepared.splits.val].map((im) => im.image));
    const features = boundedFeatureSource(cache, { budgetBytes: config.features.readCacheBytes, rows: needed.size });
    return await use({
      prepared,
      features,
      featureInfo: {
        dir: paths.features,
        fingerprint: m.fingerprint,
        encoder: {
          ...m.encoder,
          weights: m.weights,
          weightsFingerprint: m.weightsFingerprint,
          layer: m.layer,
          preprocessing: m.preprocessing,
        },
        shape: m.shape,
        dtype: m.dtype,
      },
      backend: backend.detail,
    });
  } finally {
    cache.close();
  }
}
