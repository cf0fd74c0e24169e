// `captioner demo-data`: render the built-in synthetic captioning dataset (Flickr8k format) to a folder.
import { Option, type Command } from 'commander';
import { DEMO_DEFAULTS, SCENE_KINDS, type SceneKind } from '../prep/demo-scene.js';
import { intArg } from './common.js';
import { writeOut } from '../util/stdout.js';

interface Flags {
  out: string;
  images: number;
  seed: number;
  size: number;
  scenes: SceneKind;
  force?: boolean;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('demo-data')
    .description('render the built-in demo dataset: coloured shapes with 5 captions each, in Flickr8k format')
    .option('-o, --out <dir>', 'output folder', 'data/demo')
    .option('-n, --images <n>', 'number of images', intArg('--images'), DEMO_DEFAULTS.images)
    .option('--seed <s>', 'seed: same seed, same dataset', intArg('--seed'), DEMO_DEFAULTS.seed)
    .option('--size <px>', 'image side in pixels', intArg('--size'), DEMO_DEFAULTS.size)
    .addOption(
      new Option(
        '--scenes <kind>',
        'single: one or two shapes a picture; multi: 2-3 shapes, captions with counts and relations',
      )
        .choices(SCENE_KINDS)
        .default(DEMO_DEFAULTS.scenes),
    )
    .option('--force', 'overwrite a folder holding a captions.txt that demo-data did not write')
    .option('--json', 'print a JSON summary on stdout')
    .addHelpText(
      'after',
      `
Examples:
  captioner demo-data --out data/demo                     # 1,000 pictures, Flickr8k format
  captioner demo-data --out data/demo-multi --scenes multi --images 2000 --seed 7`,
    )
    .action(async (opts: Flags) => {
      const { writeDemoDataset } = await import('../prep/demo.js'); // loaded on use: keeps --help fast
      const result = await writeDemoDataset({
        out: opts.out,
        images: opts.images,
        seed: opts.seed,
        size: opts.size,
        scenes: opts.scenes,
        force: opts.force,
      });
      if (opts.json)
        await writeOut(
          JSON.stringify({
            ...result.manifest,
            out: result.out,
            captionsFile: result.captionsFile,
            imagesDir: result.imagesDir,
            rendered: result.rendered,
          }) + '\n',
        );
    });
}
