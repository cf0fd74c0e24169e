// `captioner train`: train the caption decoder on a prepared dataset and its feature cache.
import type { Command } from 'commander';
import { intArg, onInterrupt, resolveConfig, withConfig, type ConfigFlags } from './common.js';
import { stagePaths } from '../config/load.js';
import { log } from '../log.js';
import { UsageError } from '../errors.js';

interface TrainFlags extends ConfigFlags {
  resume?: boolean;
  epochs?: number;
  out?: string;
  backend?: string;
  scst?: boolean;
  init?: string;
}

export function register(program: Command): void {
  withConfig(
    program.command('train').description('train the caption model on the prepared dataset and its cached features'),
  )
    .option(
      '--resume',
      'continue the run in the output folder from its last checkpoint (weights, optimizer, epoch, step)',
    )
    .option('--epochs <n>', 'train until this many epochs in total (train.epochs)', intArg('--epochs'))
    .option('--out <dir>', 'run folder (train.out; default <workdir>/model)')
    .option('--backend <name>', 'TensorFlow.js backend: auto, gpu, node, wasm, cpu (backend)')
    .option(
      '--scst',
      'self-critical fine-tuning (train.scst.*) of the run --init names, into --out (default <init>-scst)',
    )
    .option('--init <dir>', 'with --scst: the cross-entropy run to start from (default: train.out)')
    .addHelpText(
      'after',
      `\nExamples:\n  captioner train --config configs/flickr8k.yaml
  captioner train --config configs/flickr8k.yaml --resume          # after Ctrl-C or a crash
  captioner train --config configs/flickr8k.yaml --scst --init work/model   # fine-tune on CIDEr-D into work/model-scst`,
    )
    .action(async (opts: TrainFlags) => {
      if (opts.init !== undefined && !opts.scst) throw new UsageError('--init: only with --scst');
      if (opts.scst) return scst(opts);
      const { config } = await resolveConfig(opts, {
        backend: opts.backend,
        train: { epochs: opts.epochs, out: opts.out },
      });
      const paths = stagePaths(config);
      const { runTrain } = await import('../train/stage.js'); // loaded on use: keeps --help fast
      const interrupt = onInterrupt(
        'interrupt: finishing the current step and saving a checkpoint (press Ctrl-C again to quit at once)',
      );
      try {
        const result = await runTrain(config, { resume: opts.resume, signal: interrupt.signal });
        if (result.status === 'interrupted') process.exitCode = 130;
        else {
          const best =
            result.bestValLoss === null
              ? `no validation data, best/ holds the last epoch's weights (epoch ${result.bestEpoch})`
              : `best validation loss ${result.bestValLoss.toFixed(4)} (epoch ${result.bestEpoch})`;
          log.info(`train: ${result.status} after ${result.epochs} epochs; ${best}; model in ${paths.model}`);
        }
      } finally {
        interrupt.release();
      }
    });
}

/** `train --scst`: fine-tune a run self-critically; --epochs sets train.scst.epochs. */
async function scst(opts: TrainFlags): Promise<void> {
  const { config } = await resolveConfig(opts, { backend: opts.backend, train: { scst: { epochs: opts.epochs } } });
  const init = opts.init ?? stagePaths(config).model;
  const { defaultScstOut } = await import('../train/scst-run.js');
  const out = opts.out ?? defaultScstOut(init);
  const { runScst } = await import('../train/stage.js');
  const interrupt = onInterrupt(
    'interrupt: finishing the current step and saving a checkpoint (press Ctrl-C again to quit at once)',
  );
  try {
    const r = await runScst(config, { init, out, resume: opts.resume, signal: interrupt.signal });
    if (r.status === 'interrupted') process.exitCode = 130;
    else {
      const f = (v: number | null) => (v === null ? 'n/a' : v.toFixed(4));
      log.info(
        `scst: ${r.status} after ${r.epochs} epochs; validation CIDEr-D ${f(r.initValCider)} (${init}) -> best ${f(r.bestValCider)} (epoch ${r.bestEpoch}); model in ${out}`,
      );
    }
  } finally {
    interrupt.release();
  }
}
