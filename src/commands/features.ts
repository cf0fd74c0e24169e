// `captioner features`: encode the prepared dataset's images with the configured encoder (VGG16 by
// default) into the feature cache. Resumable; --shard i/n splits the work between processes.
import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { resolveShard } from '../util/shard.js';
import { intArg, onInterrupt, resolveConfig, withConfig, type ConfigFlags } from './common.js';
import { writeOut } from '../util/stdout.js';

interface FeaturesFlags extends ConfigFlags {
  out?: string;
  runtime?: string;
  batchSize?: number;
  shard?: string;
  shardCount?: number;
  limit?: number;
  json?: boolean;
}

export function register(program: Command): void {
  withConfig(
    program
      .command('features')
      .description(
        'encode the prepared images with VGG16 (or encoder.onnx) into the feature cache; resumable, skips what is cached',
      )
      .addHelpText(
        'after',
        '\nUnreadable images are skipped, reported on stderr and listed under "failed" in the cache manifest; the exit code is then 3.\n' +
          'Several processes may fill one cache folder with --shard 1/N ... N/N; --shard auto reads SLURM_ARRAY_TASK_ID/COUNT\n' +
          '(Slurm job arrays) or JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs, with --shard-count N).',
      ),
  )
    .option('--out <dir>', 'feature cache folder (features.out; default <workdir>/features)')
    .option('--runtime <name>', 'auto, onnx or tfjs (encoder.runtime)')
    .option('--batch-size <n>', 'images per encoder batch (features.batchSize)', intArg('--batch-size'))
    .option(
      '--shard <i/n|auto>',
      'encode only the i-th of n equal parts of the sorted image list (1-based), or auto (Slurm / Kubernetes)',
    )
    .option(
      '--shard-count <n>',
      'number of shards for --shard auto (needed for Kubernetes Indexed Jobs)',
      intArg('--shard-count'),
    )
    .option('--limit <n>', 'encode at most n images (after --shard)', intArg('--limit'))
    .option('--json', 'print a JSON summary on stdout')
    .addHelpText(
      'after',
      `\nExamples:\n  captioner features --config configs/flickr8k.yaml
  captioner features --config configs/flickr8k.yaml --shard 2/4    # one of 4 parallel jobs
  captioner features --config configs/demo.yaml --set encoder.layer=block5_conv3 --out work/demo/features-grid`,
    )
    .action(async (opts: FeaturesFlags) => {
      if (opts.runtime !== undefined && !['auto', 'onnx', 'tfjs'].includes(opts.runtime))
        throw new UsageError(`--runtime: expected auto, onnx or tfjs, got "${opts.runtime}"`);
      if (opts.batchSize !== undefined && opts.batchSize < 1)
        throw new UsageError(`--batch-size must be at least 1, got ${opts.batchSize}`);
      if (opts.limit !== undefined && opts.limit < 0)
        throw new UsageError(`--limit must be 0 or more, got ${opts.limit}`);
      const shard = resolveShard(opts.shard, opts.shardCount) ?? undefined;
      const { config } = await resolveConfig(opts, {
        encoder: { runtime: opts.runtime },
        features: { out: opts.out, batchSize: opts.batchSize },
      });
      const print = async (r: {
        dir: string;
        total: number;
        alreadyCached: number;
        encoded: number;
        failed: unknown[];
        manifest: { count: number };
        interrupted: boolean;
      }) => {
        if (opts.json)
          await writeOut(
            JSON.stringify({
              dir: r.dir,
              images: r.total,
              alreadyCached: r.alreadyCached,
              encoded: r.encoded,
              failed: r.failed,
              cached: r.manifest.count,
              interrupted: r.interrupted,
            }) + '\n',
          );
      };
      const interrupt = onInterrupt(
        'interrupt: finishing the current batch and saving what is done (press Ctrl-C again to quit at once)',
      );
      try {
        const { runFeatures } = await import('../features/run.js'); // loaded on use: keeps --help fast
        const result = await runFeatures(config, { shard, limit: opts.limit, signal: interrupt.signal });
        await print(result);
        if (result.interrupted) process.exitCode = 130;
      } catch (e) {
        const r = (e as { result?: Parameters<typeof print>[0] }).result;
        if (r) await print(r).catch(() => {}); // the stage's own error is the news
        throw e;
      } finally {
        interrupt.release();
      }
    });
}
