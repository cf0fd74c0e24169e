// The training stage as commands and the demo call it: opens the prepared dataset and feature cache
// named by the config (stagePaths), picks the backend, and trains into the run folder.
import { stagePaths } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { openFeatureCache, type FeatureCache } from '../features/cache.js';
import { loadPrepared } from '../prep/prepared.js';
import { initBackend, type BackendRequest } from '../tf/backend.js';
import type { FeatureSource } from './data.js';
import { train, type TrainResult } from './run.js';

export interface TrainStageOptions {
  resume?: boolean;
  /** Aborting finishes the current step, saves a checkpoint and returns status 'interrupted'. */
  signal?: AbortSignal;
}

/** Feature lookups cached in memory: each image's vector is read from its shard once per run. */
function memoized(cache: FeatureCache): FeatureSource {
  const mem = new Map<string, Float32Array>();
  return {
    dim: cache.dim,
    has: (k) => cache.has(k),
    get(k) {
      let v = mem.get(k);
      if (!v) mem.set(k, (v = cache.get(k)));
      return v;
    },
  };
}

/** Prepared dataset + feature cache (from the config's paths) -> a trained run folder. */
export async function runTrain(config: Config, opts: TrainStageOptions = {}): Promise<TrainResult> {
  const paths = stagePaths(config);
  const prepared = await loadPrepared(paths.prepared);
  const cache = await openFeatureCache(paths.features);
  try {
    const backend = await initBackend(config.backend as BackendRequest, { threads: config.threads });
    const m = cache.manifest;
    return await train({
      config,
      prepared,
      features: memoized(cache),
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
