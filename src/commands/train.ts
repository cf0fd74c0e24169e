// `captioner train`: train the caption decoder on a prepared dataset and its feature cache.
import type { Command } from 'commander';
import { intArg, resolveConfig, withConfig, type ConfigFlags } from './common.js';
import { stagePaths } from '../config/load.js';
import type { BackendRequest } from '../tf/backend.js';
import type { FeatureCache } from '../features/cache.js';
import type { FeatureSource } from '../train/data.js';
import { log } from '../log.js';

interface TrainFlags extends ConfigFlags {
  resume?: boolean;
  epochs?: number;
  out?: string;
  backend?: string;
}

/** Vectors are read from the shards once and then served from memory (every epoch reads them all). */
function memoized(cache: FeatureCache): FeatureSource {
  const mem = new Map<string, Float32Array>();
  return {
    dim: cache.dim,
    has: (k) => cache.has(k),
    get(k) {
      let v = mem.get(k);
      if (!v) {
        v = cache.get(k);
        mem.set(k, v);
      }
      return v;
    },
  };
}

export function register(program: Command): void {
  withConfig(program.command('train').description('train the caption model on the prepared dataset and its cached features'))
    .option('--resume', 'continue the run in the output folder from its last checkpoint (weights, optimizer, epoch, step)')
    .option('--epochs <n>', 'train until this many epochs in total (train.epochs)', intArg('--epochs'))
    .option('--out <dir>', 'run folder (train.out; default <workdir>/model)')
    .option('--backend <name>', 'TensorFlow.js backend: auto, gpu, node, wasm, cpu (backend)')
    .action(async (opts: TrainFlags) => {
      const { config } = await resolveConfig(opts, { backend: opts.backend, train: { epochs: opts.epochs, out: opts.out } });
      const paths = stagePaths(config);
      // stages are loaded on use: keeps --help fast
      const [{ initBackend }, { loadPrepared }, { openFeatureCache }, { train }] = await Promise.all([
        import('../tf/backend.js'),
        import('../prep/prepared.js'),
        import('../features/cache.js'),
        import('../train/run.js'),
      ]);
      const prepared = await loadPrepared(paths.prepared);
      const cache = await openFeatureCache(paths.features);
      const controller = new AbortController();
      const onSigint = () => {
        log.warn('interrupt: finishing the current step and saving a checkpoint (press Ctrl-C again to quit at once)');
        controller.abort();
        process.removeListener('SIGINT', onSigint);
      };
      process.on('SIGINT', onSigint);
      try {
        const backend = await initBackend(config.backend as BackendRequest, { threads: config.threads });
        const m = cache.manifest;
        const result = await train({
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
          signal: controller.signal,
        });
        if (result.status === 'interrupted') process.exitCode = 130;
        else log.info(`train: ${result.status} after ${result.epochs} epochs; best validation loss ${result.bestValLoss.toFixed(4)} (epoch ${result.bestEpoch}); model in ${paths.model}`);
      } finally {
        process.removeListener('SIGINT', onSigint);
        cache.close();
      }
    });
}
