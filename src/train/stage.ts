// The training stages as commands and the demo call them (cross-entropy training, and self-critical
// fine-tuning of a trained run): opens the prepared dataset and feature cache
// named by the config (stagePaths), picks the backend, and trains into the run folder. Feature vectors
// are read through a bounded reader (features.readCacheBytes), never the whole split as float32.
import { stagePaths } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { boundedFeatureSource, openFeatureCache } from '../features/cache.js';
import { loadPrepared, type Prepared } from '../prep/prepared.js';
import { initBackend, type BackendRequest } from '../tf/backend.js';
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
  return withTrainingData(config, (d) =>
    train({ config, prepared: d.prepared, features: d.features, featureInfo: d.featureInfo, out: paths.model, resume: opts.resume, backend: d.backend, signal: opts.signal }),
  );
}

export interface ScstStageOptions extends TrainStageOptions {
  /** The cross-entropy run to fine-tune. */
  init: string;
  out: string;
}

/** A cross-entropy run + the config's prepared dataset and feature cache -> a self-critically fine-tuned run folder. */
export async function runScst(config: Config, opts: ScstStageOptions): Promise<ScstResult> {
  const { trainScst } = await import('./scst-run.js');
  return withTrainingData(config, (d) =>
    trainScst({ config, prepared: d.prepared, features: d.features, featureInfo: d.featureInfo, init: opts.init, out: opts.out, resume: opts.resume, backend: d.backend, signal: opts.signal }),
  );
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
    // float32, else as stored, least recently used dropped and read again from the shards)
    const needed = new Set([...prepared.splits.train, ...prepared.splits.val].map((im) => im.image));
    const features = boundedFeatureSource(cache, { budgetBytes: config.features.readCacheBytes, rows: needed.size });
    return await use({
      prepared,
      features,
      featureInfo: {
        dir: paths.features,
        fingerprint: m.fingerprint,
        encoder: { ...m.encoder, weights: m.weights, weightsFingerprint: m.weightsFingerprint, layer: m.layer, preprocessing: m.preprocessing },
        shape: m.shape,
        dtype: m.dtype,
      },
      backend: backend.detail,
    });
  } finally {
    cache.close();
  }
}
