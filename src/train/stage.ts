// The training stage as commands and the demo call it: opens the prepared dataset and feature cache
// named by the config (stagePaths), picks the backend, and trains into the run folder. Feature vectors
// are read through a bounded reader (features.readCacheBytes), never the whole split as float32.
import { stagePaths } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { boundedFeatureSource, openFeatureCache } from '../features/cache.js';
import { loadPrepared } from '../prep/prepared.js';
import { initBackend, type BackendRequest } from '../tf/backend.js';
import { train, type TrainResult } from './run.js';

export interface TrainStageOptions {
  resume?: boolean;
  /** Aborting finishes the current step, saves a checkpoint and returns status 'interrupted'. */
  signal?: AbortSignal;
}

/** Prepared dataset + feature cache (from the config's paths) -> a trained run folder. */
export async function runTrain(config: Config, opts: TrainStageOptions = {}): Promise<TrainResult> {
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
    return await train({
      config,
      prepared,
      features,
      featureInfo: {
        dir: paths.features,
        fingerprint: m.fingerprint,
        encoder: { ...m.encoder, weights: m.weights, weightsFingerprint: m.weightsFingerprint, layer: m.layer, preprocessing: m.preprocessing },
        shape: m.shape,
        dtype: m.dtype,
      },
      out: paths.model,
      resume: opts.resume,
      backend: backend.detail,
      signal: opts.signal,
    });
  } finally {
    cache.close();
  }
}
