// `captioner demo`: the whole pipeline (demo-data, prep, features, train, eval, caption) on the built-in
// synthetic dataset, offline, in a few minutes. Progress and logs on stderr; the metrics table and the
// closing summary (artifacts, next commands) on stdout, or one JSON object with --json.
import { Option, type Command } from 'commander';
import { DEMO_RUN_DEFAULTS } from '../demo/defaults.js';
import { formatMetricsTable } from '../eval/report.js';
import { SCENE_KINDS, type SceneKind } from '../prep/demo-scene.js';
import { intArg } from './common.js';
import { writeOut } from '../util/stdout.js';

interface DemoFlags {
  out?: string;
  scenes: SceneKind;
  images?: number;
  epochs?: number;
  quick?: boolean;
  set?: string[];
  json?: boolean;
  scst?: boolean;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

export function register(program: Command): void {
  program
    .command('demo')
    .description(
      'run the whole pipeline on a built-in synthetic dataset (no download): generate, prep, features, train, eval, caption',
    )
    .addHelpText(
      'after',
      `\nTakes about 3 minutes on 2 idle CPU cores (measured: docs/benchmarks.md); --quick is a smaller run; longer on a busy machine. Uses configs/demo.yaml with every path under --out.\n` +
        'VGG16 runs with random weights unless `captioner weights vgg16` has cached the real ones.\n' +
        'Ends with the test BLEU-4 against an image-blind baseline, where every artifact is, and commands to try next.',
    )
    .option(
      '-o, --out <dir>',
      `folder for everything the demo writes (default ${DEMO_RUN_DEFAULTS.out}; --scenes multi: ${DEMO_RUN_DEFAULTS.multiOut})`,
    )
    .addOption(
      new Option(
        '--scenes <kind>',
        'single: one or two shapes a picture; multi: 2-3 shapes, captions with counts and relations',
      )
        .choices(SCENE_KINDS)
        .default(DEMO_RUN_DEFAULTS.scenes),
    )
    .option(
      '-n, --images <n>',
      `demo images to render (default ${DEMO_RUN_DEFAULTS.images}; --quick ${DEMO_RUN_DEFAULTS.quickImages})`,
      intArg('--images'),
    )
    .option(
      '--epochs <n>',
      "training epochs at most (default: configs/demo.yaml's; early stopping may end sooner)",
      intArg('--epochs'),
    )
    .option(
      '--quick',
      'a smaller, faster run: 300 images instead of 1,000, greedy decoding, no thumbnails, fewer sample captions',
    )
    .option('--set <key=value>', 'override a demo config value (repeatable), e.g. --set model.units=64', collect)
    .option(
      '--scst',
      'then fine-tune the model self-critically on CIDEr-D (train.scst.*) and compare test CIDEr-D and BLEU-4',
    )
    .option('--json', 'print a JSON summary instead of the table and the summary text')
    .addHelpText(
      'after',
      `\nExamples:\n  captioner demo                                   # the whole pipeline on synthetic shapes
  captioner demo --quick                           # a smaller, faster run
  captioner demo --scenes multi --set model.type=attention`,
    )
    .action(async (opts: DemoFlags) => {
      const { demoSummary, runDemo } = await import('../demo/run.js'); // loaded on use: keeps --help fast
      const r = await runDemo({
        out: opts.out,
        scenes: opts.scenes,
        images: opts.images,
        epochs: opts.epochs,
        quick: opts.quick,
        sets: opts.set,
        scst: opts.scst,
      });
      const rep = r.eval.report;
      if (opts.json) {
        await writeOut(
          JSON.stringify({
            out: r.out,
            scenes: r.scenes,
            weights: r.weights,
            images: r.images,
            train: {
              status: r.train.status,
              epochs: r.train.epochs,
              bestEpoch: r.train.bestEpoch,
              bestValLoss: r.train.bestValLoss,
            },
            metrics: rep.metrics,
            baseline: rep.baseline ? { caption: rep.baseline.caption, metrics: rep.baseline.metrics } : undefined,
            captions: { captioned: r.caption.captioned, failed: r.caption.failed },
            artifacts: r.artifacts,
            seconds: r.seconds,
            ...(r.scst
              ? {
                  scst: {
                    model: r.scst.model,
                    status: r.scst.train.status,
                    epochs: r.scst.train.epochs,
                    bestEpoch: r.scst.train.bestEpoch,
                    bestValCider: r.scst.train.bestValCider,
                    metrics: r.scst.eval.report.metrics,
                  },
                }
              : {}),
          }) + '\n',
        );
        return;
      }
      await writeOut(
        `\ntest metrics (${rep.metrics.images} images, beam ${rep.decode.beam}):\n` +
          formatMetricsTable(rep.metrics, { baseline: rep.baseline?.metrics }) +
          demoSummary(r),
      );
    });
}
