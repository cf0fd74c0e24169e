// `captioner train`: train the caption decoder on a prepared dataset and its feature cache.
import type { Command } from 'commander';
import { intArg, onInterrupt, resolveConfig, withConfig, type ConfigFlags } from './common.js';
import { stagePaths } from '../config/load.js';
import { log } from '../log.js';

interface TrainFlags extends ConfigFlags {
  resume?: boolean;
  epochs?: number;
  out?: string;
  backend?: string;
}

export function register(program: Command): void {
  withConfig(program.command('train').description('train the caption model on the prepared dataset and its cached features'))
    .option('--resume', 'continue the run in the output folder from its last checkpoint (weights, optimizer, epoch, step)')
    .option('--epochs <n>', 'train until this many epochs in total (train.epochs)', intArg('--epochs'))
    .option('--out <dir>', 'run folder (train.out; default <workdir>/model)')
    .option('--backend <name>', 'TensorFlow.js backend: auto, gpu, node, wasm, cpu (backend)')
    .addHelpText('after', `\nExamples:\n  captioner train --config configs/flickr8k.yaml
  captioner train --config configs/flickr8k.yaml --resume          # after Ctrl-C or a crash
  captioner train --config configs/demo.yaml --set train.epochs=5 --set model.units=128`)
    .action(async (opts: TrainFlags) => {
      const { config } = await resolveConfig(opts, { backend: opts.backend, train: { epochs: opts.epochs, out: opts.out } });
      const paths = stagePaths(config);
      const { runTrain } = await import('../train/stage.js'); // loaded on use: keeps --help fast
      const interrupt = onInterrupt('interrupt: finishing the current step and saving a checkpoint (press Ctrl-C again to quit at once)');
      try {
        const result = await runTrain(config, { resume: opts.resume, signal: interrupt.signal });
        if (result.status === 'interrupted') process.exitCode = 130;
        else {
          const best = result.bestValLoss === null ? `no validation data, best/ holds the last epoch's weights (epoch ${result.bestEpoch})` : `best validation loss ${result.bestValLoss.toFixed(4)} (epoch ${result.bestEpoch})`;
          log.info(`train: ${result.status} after ${result.epochs} epochs; ${best}; model in ${paths.model}`);
        }
      } finally {
        interrupt.release();
      }
    });
}
