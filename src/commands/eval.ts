// `captioner eval`: caption a split of the run's prepared dataset from its cached features and score the
// captions (BLEU-1..4, CIDEr-D, ROUGE-L); writes predictions and a report, prints the metrics table.
import { Option, type Command } from 'commander';
import { UsageError } from '../errors.js';
import { formatMetricsTable } from '../eval/report.js';
import { intArg, resolveConfigForRun, withConfig, type ConfigFlags } from './common.js';
import { writeOut } from '../util/stdout.js';

interface EvalFlags extends ConfigFlags {
  bleu?: boolean;
  model?: string;
  split?: 'train' | 'val' | 'test';
  limit?: number;
  beam?: number;
  out?: string;
  which?: 'best' | 'last';
  baseline?: boolean;
  thumbnails?: boolean;
  json?: boolean;
}

export function register(program: Command): void {
  withConfig(
    program
      .command('eval')
      .description(
        'caption a split (default test) of the dataset a run was trained on and score it: BLEU-1..4, CIDEr-D, ROUGE-L',
      )
      .addHelpText(
        'after',
        '\nWrites <out>/predictions.jsonl ({"image", "caption", "logprob"}), results.json (COCO results), report.json and report.html\n' +
          '(thumbnails, captions, references, per-image scores). The metrics are also compared with an image-blind baseline:\n' +
          'the best single training caption given to every image.',
      ),
  )
    .option('--bleu', 'report BLEU-1..4 (always computed, with CIDEr-D and ROUGE-L)')
    .option('-m, --model <dir>', 'run folder written by `captioner train` (default <workdir>/model)')
    .addOption(new Option('--split <name>', 'split to evaluate (eval.split)').choices(['train', 'val', 'test']))
    .option('--limit <n>', 'evaluate at most n images (eval.limit; 0: all)', intArg('--limit'))
    .option('--beam <k>', 'beam size, 1 = greedy (decode.beam)', intArg('--beam'))
    .option('-o, --out <dir>', 'report folder (eval.out; default <run>/eval-<split>)')
    .addOption(
      new Option('--which <checkpoint>', 'checkpoint: best (lowest validation loss) or last')
        .choices(['best', 'last'])
        .default('best'),
    )
    .option('--no-baseline', 'skip the image-blind baseline')
    .option('--no-thumbnails', 'no thumbnails in report.html')
    .option('--json', 'print the metrics (and report paths) as JSON instead of a table')
    .addHelpText(
      'after',
      `\nExamples:\n  captioner eval --config configs/flickr8k.yaml --bleu
  captioner eval --model work/demo/model --beam 5 --out work/demo/eval-beam5
  captioner eval --model work/demo/model --split val --json`,
    )
    .action(async (opts: EvalFlags) => {
      if (opts.limit !== undefined && opts.limit < 0)
        throw new UsageError(`--limit must be 0 or more, got ${opts.limit}`);
      if (opts.beam !== undefined && opts.beam < 1) throw new UsageError(`--beam must be at least 1, got ${opts.beam}`);
      // the run's own decode settings < --config < --set < flags
      const { config, runDir } = await resolveConfigForRun(
        opts,
        { eval: { split: opts.split, limit: opts.limit, out: opts.out }, decode: { beam: opts.beam } },
        opts.model,
      );
      const { runEval } = await import('../eval/run.js'); // loaded on use: keeps --help fast
      const { report, files } = await runEval(config, {
        model: runDir,
        which: opts.which,
        noBaseline: opts.baseline === false,
        noThumbnails: opts.thumbnails === false,
      });
      if (opts.json) {
        await writeOut(
          JSON.stringify({
            split: report.split,
            beam: report.decode.beam,
            tokenize: report.tokenize,
            metrics: report.metrics,
            baseline: report.baseline
              ? { caption: report.baseline.caption, metrics: report.baseline.metrics }
              : undefined,
            files,
          }) + '\n',
        );
      } else {
        await writeOut(formatMetricsTable(report.metrics, { baseline: report.baseline?.metrics }));
      }
    });
}
