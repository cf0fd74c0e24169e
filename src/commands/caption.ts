// `captioner caption PATH...`: caption image files with a trained run; JSON lines on stdout or --output.
// Thin: flags -> config, shard resolution, then src/caption/run.ts does the work.
import { Option, type Command } from 'commander';
import { UsageError } from '../errors.js';
import { log } from '../log.js';
import { resolveShard } from '../util/shard.js';
import { intArg, onInterrupt, resolveConfigForRun, withConfig, type ConfigFlags } from './common.js';

interface CaptionFlags extends ConfigFlags {
  model?: string;
  beam?: number;
  output?: string;
  batchSize?: number;
  resume?: boolean;
  shard?: string;
  shardCount?: number;
  recursive?: boolean;
  attentionMaps?: string;
  format: 'jsonl' | 'text';
}

export function register(program: Command): void {
  withConfig(
    program
      .command('caption')
      .description('caption image files, folders (recursive), globs or - (paths on stdin): one JSON line per image')
      .argument('<path...>', 'image files, folders, globs, or - to read paths from stdin')
      .addHelpText(
        'after',
        '\nOutput: {"image": path, "caption": text, "logprob": n} per image, or {"image": path, "error": reason} for a file\n' +
          'that cannot be captioned (the run goes on; exit 3 at the end). Images are taken in sorted path order.\n' +
          '--resume continues an --output file: images with a caption line are skipped, images with an error line are\n' +
          'retried (their old error lines are dropped, so the file keeps one line per image; same PATH arguments).\n' +
          "The decode settings are the run's own (its config.yaml), overridden by --config, --set and the flags.\n" +
          '--shard i/n takes the i-th of n parts of the sorted list; --shard auto reads SLURM_ARRAY_TASK_ID/COUNT\n' +
          '(Slurm job arrays) or JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs, with --shard-count N).',
      ),
  )
    .option('-m, --model <run>', 'trained run folder (default <workdir>/model)')
    .option('-k, --beam <k>', 'beam size (decode.beam; 1 = greedy)', intArg('--beam'))
    .option('-o, --output <file>', 'append JSON lines to this file instead of stdout')
    .option('--batch-size <n>', 'images per encoder batch (caption.batchSize)', intArg('--batch-size'))
    .option('--resume', 'continue --output: skip captioned images, retry failed ones, cut a half-written last line')
    .option(
      '--shard <i/n|auto>',
      'caption only the i-th of n parts of the sorted input (1-based), or auto (Slurm / Kubernetes)',
    )
    .option(
      '--shard-count <n>',
      'number of shards for --shard auto (needed for Kubernetes Indexed Jobs)',
      intArg('--shard-count'),
    )
    .option(
      '--attention-maps <dir>',
      'attention models: also write each image\'s attention map (PNG) into this folder; the JSON line names it in "attention"',
    )
    .option('--no-recursive', 'do not descend into sub-folders (caption.recursive)')
    .addOption(
      new Option(
        '--format <format>',
        'jsonl: one JSON object per image; text: "path<TAB>caption" per captioned image (failures only on stderr)',
      )
        .choices(['jsonl', 'text'])
        .default('jsonl'),
    )
    .addHelpText(
      'after',
      `
Examples:
  captioner caption ./photos --model work/demo/model > captions.jsonl
  captioner caption photo.jpg --model work/demo/model --format text
  find /data -name '*.jpg' | captioner caption - --model RUN --output captions.jsonl --resume`,
    )
    .action(async (paths: string[], opts: CaptionFlags) => {
      if (opts.beam !== undefined && opts.beam < 1) throw new UsageError(`--beam must be at least 1, got ${opts.beam}`);
      if (opts.batchSize !== undefined && opts.batchSize < 1)
        throw new UsageError(`--batch-size must be at least 1, got ${opts.batchSize}`);
      if (opts.resume && !opts.output) throw new UsageError('--resume needs --output FILE (the file to continue)');
      if (opts.resume && opts.format === 'text')
        throw new UsageError('--resume needs the jsonl format (it reads back which images are done)');
      const shard = resolveShard(opts.shard, opts.shardCount);
      // the run's own decode settings < --config < --set < flags
      const { config, runDir } = await resolveConfigForRun(
        opts,
        {
          decode: { beam: opts.beam },
          caption: { batchSize: opts.batchSize, recursive: opts.recursive === false ? false : undefined },
        },
        opts.model,
      );
      const { runCaption } = await import('../caption/run.js'); // loaded on use: keeps --help fast
      const interrupt = onInterrupt('interrupt: finishing the lines in progress (press Ctrl-C again to quit at once)');
      try {
        const summary = await runCaption(config, {
          inputs: paths,
          model: runDir,
          output: opts.output,
          resume: opts.resume,
          format: opts.format,
          shard,
          attentionMaps: opts.attentionMaps,
          signal: interrupt.signal,
        });
        if (summary.interrupted) {
          if (opts.output)
            log.warn(
              `interrupted: ${opts.output} holds the finished images; run the same command with --resume to continue`,
            );
          else log.warn('interrupted: the lines written so far are complete');
          process.exitCode = 130;
        }
      } finally {
        interrupt.release();
      }
    });
}
