// `captioner prep`: read a captions dataset and write the prepared folder (vocab, splits, manifest).
import type { Command } from 'commander';
import { log } from '../log.js';
import { resolveConfig, withConfig, type ConfigFlags } from './common.js';
import { writeOut } from '../util/stdout.js';

interface PrepFlags extends ConfigFlags {
  format?: string;
  captions?: string;
  images?: string;
  out?: string;
  strict?: boolean;
  json?: boolean;
}

export function register(program: Command): void {
  withConfig(
    program
      .command('prep')
      .description(
        'read a captions dataset and write a prepared dataset folder (vocabulary, train/val/test splits, manifest)',
      ),
  )
    .option('--format <format>', 'captions format: flickr8k, flickr30k-csv, karpathy, coco, csv (dataset.format)')
    .option('--captions <file>', 'captions file (dataset.captions)')
    .option('--images <dir>', 'images folder; captions of missing images are reported and excluded (dataset.images)')
    .option('--out <dir>', 'output folder (prep.out; default <workdir>/prepared)')
    .option('--strict', 'fail when captions name missing images or the files hold inconsistent lines (prep.strict)')
    .option('--json', 'print the manifest as JSON on stdout')
    .addHelpText(
      'after',
      `
Examples:
  captioner prep --config configs/flickr8k.yaml
  captioner prep --format csv --captions data/flickr8k/captions.txt --images data/flickr8k/Images --out work/f8k/prepared
  captioner prep --config configs/coco.yaml --strict --json > prepared-manifest.json`,
    )
    .action(async (opts: PrepFlags) => {
      const { config } = await resolveConfig(opts, {
        dataset: { format: opts.format, captions: opts.captions, images: opts.images },
        prep: { out: opts.out, strict: opts.strict ? true : undefined },
      });
      const { runPrep, summary } = await import('../prep/run.js'); // loaded on use: keeps --help fast
      const { dir, manifest } = await runPrep(config);
      for (const line of summary(dir, manifest)) log.info(line);
      if (opts.json) await writeOut(JSON.stringify(manifest, null, 2) + '\n');
    });
}
