// `captioner demo`: the whole pipeline on the built-in synthetic dataset, offline, in a few minutes on a
// laptop CPU. Every step is the real stage function (writeDemoDataset, runPrep, runFeatures, train,
// runEval, runCaption) on a config loaded from configs/demo.yaml with its paths moved under --out:
//   <out>/data/        the rendered images, captions and split files (demo-data)
//   <out>/prepared/    the prepared dataset          <out>/features/  the VGG16 feature cache
//   <out>/model/       the trained run (+ eval-test/ with predictions and the HTML report)
//   <out>/samples/     a folder of test images       <out>/captions.jsonl  their captions (caption pipeline)
//   <out>/demo-run.json  the scene kind (and demo version) the data and feature cache are for
//   <out>/model-scst/  with --scst: the model fine-tuned self-critically (train.scst.*), evaluated the same way
// VGG16 runs with random (untrained) weights unless the real Keras weights are in the weights cache.
// --scenes multi draws 2-3 shapes a picture (counts and relations) into its own default folder.
// The proof that the model learned: its test BLEU-4 against the image-blind baseline (the best single
// training caption given to every test image, see src/eval/report-baseline.ts).
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig, stagePaths } from '../config/load.js';
import { DECODER_FEATURES, type Config } from '../config/schema.js';
import { UsageError } from '../errors.js';
import { runCaption, type CaptionSummary } from '../caption/run.js';
import { runFeatures } from '../features/run.js';
import { KERAS_VGG16_FILES, weightsCacheDir } from '../features/weights/cache.js';
import { runEval, type EvalResult } from '../eval/run.js';
import { log } from '../log.js';
import { checkScenes, readDemoManifest, writeDemoDataset } from '../prep/demo.js';
import { DEMO_VERSION, type SceneKind } from '../prep/demo-scene.js';
import { exists, writeJsonAtomic } from '../util/fsx.js';
import { loadPrepared } from '../prep/prepared.js';
import { runPrep } from '../prep/run.js';
import type { TrainResult } from '../train/run.js';
import { runScst, runTrain } from '../train/stage.js';
import type { ScstResult } from '../train/scst-run.js';
import { ensureDir } from '../util/fsx.js';

/** The demo config shipped with the package (configs/demo.yaml, two folders above this file in src/ and dist/). */
export const DEMO_CONFIG = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  'configs',
  'demo.yaml',
);

export { DEMO_RUN_DEFAULTS } from './defaults.js';
import { DEMO_RUN_DEFAULTS } from './defaults.js';

export interface DemoOptions {
  /** Default work/demo (--scenes multi: work/demo-multi). */
  out?: string;
  /** single (default) or multi: see src/prep/demo-scene.ts. */
  scenes?: SceneKind;
  /** Images to render (default 1000; --quick 300). */
  images?: number;
  /** Training epochs at most (default demo.yaml's 12; early stopping may end sooner). */
  epochs?: number;
  /** Smaller and faster: half the images, greedy decoding, no thumbnails, fewer sample captions. */
  quick?: boolean;
  /** Extra `key=value` config overrides (applied after demo.yaml, before the demo's own paths). */
  sets?: string[];
  /** Where encoder.weights auto would look (default: the `captioner weights` cache). */
  weightsCacheDir?: string;
  /** After the usual demo, fine-tune its model self-critically (train.scst.*) and evaluate that too. */
  scst?: boolean;
}

export interface DemoArtifacts {
  data: string;
  prepared: string;
  features: string;
  model: string;
  lossChart: string;
  predictions: string;
  results: string;
  report: string;
  html: string;
  samples: string;
  captions: string;
}

export interface DemoResult {
  out: string;
  scenes: SceneKind;
  weights: 'random' | 'imagenet';
  images: number;
  config: Config;
  train: TrainResult;
  eval: EvalResult;
  caption: CaptionSummary;
  artifacts: DemoArtifacts;
  /** Seconds per step and in total. */
  seconds: Record<string, number>;
  /** With --scst: the fine-tuning run and its test evaluation. */
  scst?: { model: string; train: ScstResult; eval: EvalResult };
}

/**
 * The demo's config: demo.yaml with every path under `out`. demo.yaml caches fc2 vectors for the merge
 * decoder; with a decoder that attends over image positions (model.type attention or transformer) and no
 * --set encoder.layer, the demo uses the block5_pool grid (7 x 7 x 512: the cheapest grid on a CPU;
 * block5_conv3, 14 x 14, is Show, Attend and Tell's), and says so.
 */
export async function demoConfig(
  out: string,
  o: { epochs?: number; quick?: boolean; weights: string; sets?: string[] },
): Promise<Config> {
  const config = await loadDemoConfig(out, o, {});
  const layerSet = (o.sets ?? []).some((s) => /^\s*encoder\.layer\s*=/.test(s));
  if (DECODER_FEATURES[config.model.type] === 'grid' && config.encoder.layer === 'fc2' && !layerSet) {
    log.info(
      `demo: model.type ${config.model.type} attends over image positions, so the demo caches VGG16 block5_pool features (a 7x7x512 grid) instead of fc2 vectors (--set encoder.layer=block5_conv3 for the 14x14 grid of Show, Attend and Tell)`,
    );
    return loadDemoConfig(out, o, { layer: 'block5_pool' });
  }
  return config;
}

async function loadDemoConfig(
  out: string,
  o: { epochs?: number; quick?: boolean; weights: string; sets?: string[] },
  encoder: { layer?: string },
): Promise<Config> {
  const data = path.join(out, 'data');
  const { config } = await loadConfig({
    file: DEMO_CONFIG,
    sets: o.sets,
    overrides: {
      workdir: out,
      dataset: {
        captions: path.join(data, 'captions.txt'),
        images: path.join(data, 'images'),
        split: {
          trainFile: path.join(data, 'trainImages.txt'),
          valFile: path.join(data, 'valImages.txt'),
          testFile: path.join(data, 'testImages.txt'),
        },
      },
      prep: { out: path.join(out, 'prepared') },
      features: { out: path.join(out, 'features') },
      train: { out: path.join(out, 'model'), ...(o.epochs !== undefined ? { epochs: o.epochs } : {}) },
      encoder: { weights: o.weights, ...encoder },
      ...(o.quick ? { decode: { beam: 1 } } : {}),
      eval: { split: 'test', out: path.join(out, 'model', 'eval-test') },
    },
  });
  return config;
}

/** Remove what a previous demo left in `dir` (a training run refuses to start over an old one). */
async function clearDemoOutput(p: string): Promise<void> {
  await fs.rm(p, { recursive: true, force: true });
}

/** Refuse an --out that holds something other than an earlier demo. */
async function checkOut(out: string): Promise<void> {
  let names: string[];
  try {
    names = await fs.readdir(out);
  } catch {
    return; // does not exist yet
  }
  const ours = new Set([
    'data',
    'prepared',
    'features',
    'model',
    'model-scst',
    'samples',
    'captions.jsonl',
    'demo-run.json',
  ]);
  const foreign = names.filter((n) => !ours.has(n) && !n.startsWith('.'));
  if (foreign.length)
    throw new UsageError(
      `--out ${out}: holds files the demo did not write (${foreign.slice(0, 5).join(', ')}); choose an empty or new folder`,
    );
}

interface DemoRunMarker {
  scenes: SceneKind;
  version: number;
  /** The encoder layer of the feature cache (absent in older markers: fc2, the only one then). */
  layer?: string;
}

/**
 * The feature cache is keyed by image name, and both scene kinds name their images demo_00000.jpg...:
 * features computed for the other kind (or another DEMO_VERSION) in this --out would be silently wrong.
 * So <out>/demo-run.json records what the folder holds; when it (or, for folders older than the marker,
 * data/demo.json) says otherwise, or nothing says, the feature cache goes before anything is re-rendered.
 * Likewise when the encoder layer changes (e.g. --set model.type=attention after a merge demo): the
 * cache would refuse the new settings.
 */
async function checkSceneKind(out: string, scenes: SceneKind, features: string, layer: string): Promise<void> {
  const marker = path.join(out, 'demo-run.json');
  let was: DemoRunMarker | undefined;
  try {
    was = JSON.parse(await fs.readFile(marker, 'utf8')) as DemoRunMarker;
  } catch {
    was = await readDemoManifest(path.join(out, 'data'));
  }
  const wasLayer = was?.layer ?? 'fc2';
  const same = was !== undefined && was.scenes === scenes && was.version === DEMO_VERSION;
  if (!same && (await exists(features))) {
    log.info(
      `demo: ${features} was computed for ${was ? `${was.scenes} scenes (demo version ${was.version})` : 'unknown images'}; removing it (recomputed in step 3)`,
    );
    await clearDemoOutput(features);
  } else if (wasLayer !== layer && (await exists(features))) {
    log.info(
      `demo: ${features} holds ${wasLayer} features, this run uses ${layer}; removing it (recomputed in step 3)`,
    );
    await clearDemoOutput(features);
  }
  if (!same || was?.layer !== layer)
    await writeJsonAtomic(marker, { scenes, version: DEMO_VERSION, layer } satisfies DemoRunMarker);
}

const step = (n: number, total: number, what: string) => log.info(`\n=== [${n}/${total}] ${what}`);

export async function runDemo(opts: DemoOptions = {}): Promise<DemoResult> {
  const t0 = Date.now();
  const scenes = checkScenes(opts.scenes ?? DEMO_RUN_DEFAULTS.scenes);
  const out = opts.out ?? (scenes === 'multi' ? DEMO_RUN_DEFAULTS.multiOut : DEMO_RUN_DEFAULTS.out);
  const images = opts.images ?? (opts.quick ? DEMO_RUN_DEFAULTS.quickImages : DEMO_RUN_DEFAULTS.images);
  if (!Number.isInteger(images) || images < 20)
    throw new UsageError(`--images must be an integer of at least 20 (the test split is a tenth), got ${images}`);
  if (opts.epochs !== undefined && (!Number.isInteger(opts.epochs) || opts.epochs < 1))
    throw new UsageError(`--epochs must be a positive integer, got ${opts.epochs}`);
  await checkOut(out);

  const wdir = opts.weightsCacheDir ?? weightsCacheDir();
  const realWeights = path.join(wdir, KERAS_VGG16_FILES.top.name);
  const haveReal = await fs.access(realWeights).then(
    () => true,
    () => false,
  );
  const weights = haveReal ? 'imagenet' : 'random';
  const config = await demoConfig(out, {
    epochs: opts.epochs,
    quick: opts.quick,
    weights: haveReal ? realWeights : 'random',
    sets: opts.sets,
  });
  const paths = stagePaths(config);
  const seconds: Record<string, number> = {};
  const timed = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
    const s = Date.now();
    try {
      return await f();
    } finally {
      seconds[name] = (Date.now() - s) / 1000;
    }
  };
  const TOTAL = opts.scst ? 7 : 6;
  if (haveReal) log.info(`demo: VGG16 runs with the REAL ImageNet weights found in ${realWeights}`);
  else {
    log.warn(
      'demo: VGG16 runs with RANDOM, UNTRAINED weights (no real weights in the cache)\n' +
        '*****************************************************************************************\n' +
        '* The features still tell colours, sizes and positions apart, which is all the demo    *\n' +
        '* needs; for real photos run `captioner weights vgg16` first (528 MB download).        *\n' +
        '*****************************************************************************************',
    );
  }

  step(
    1,
    TOTAL,
    `generating ${images} ${scenes === 'multi' ? 'multi-shape ' : ''}demo images with 5 captions each -> ${path.join(out, 'data')}`,
  );
  await checkSceneKind(out, scenes, paths.features, config.encoder.layer);
  const data = await timed('data', () => writeDemoDataset({ out: path.join(out, 'data'), images, scenes }));

  step(2, TOTAL, `preparing the dataset (configs/demo.yaml) -> ${paths.prepared}`);
  const prep = await timed('prep', () => runPrep(config));
  const c = prep.manifest.counts;
  log.info(
    `prep: train ${c.train.images} images, val ${c.val.images}, test ${c.test.images}; vocabulary ${prep.manifest.vocabSize} words`,
  );

  step(
    3,
    TOTAL,
    `caching VGG16 ${config.encoder.layer} features (${weights === 'random' ? 'random weights' : 'ImageNet weights'}) -> ${paths.features}`,
  );
  await timed('features', () => runFeatures(config));

  step(4, TOTAL, `training the caption model (${config.train.epochs} epochs at most) -> ${paths.model}`);
  await clearDemoOutput(paths.model);
  const trained = await timed('train', () => runTrain(config));

  step(5, TOTAL, `evaluating on the ${c.test.images} test images (beam ${config.decode.beam})`);
  const evaluated = await timed('eval', () => runEval(config, { model: paths.model, noThumbnails: opts.quick }));

  const samples = path.join(out, 'samples');
  const captions = path.join(out, 'captions.jsonl');
  const prepared = await loadPrepared(paths.prepared);
  const pick = prepared.splits.test.slice(0, opts.quick ? DEMO_RUN_DEFAULTS.quickSamples : DEMO_RUN_DEFAULTS.samples);
  step(
    6,
    TOTAL,
    `captioning a folder of ${pick.length} test images (the caption pipeline: image files -> VGG16 -> decoder) -> ${captions}`,
  );
  await clearDemoOutput(samples);
  await fs.rm(captions, { force: true });
  await ensureDir(samples);
  for (const im of pick)
    await fs.copyFile(path.join(data.imagesDir, im.file), path.join(samples, path.basename(im.file)));
  const captioned = await timed('caption', () =>
    runCaption(config, { inputs: [samples], model: paths.model, output: captions }),
  );

  let scst: DemoResult['scst'];
  if (opts.scst) {
    const model = `${paths.model}-scst`;
    step(
      7,
      TOTAL,
      `self-critical fine-tuning on CIDEr-D (${config.train.scst.epochs} epochs at most) -> ${model}, then evaluating it the same way`,
    );
    await clearDemoOutput(model);
    const tuned = await timed('scst', () => runScst(config, { init: paths.model, out: model }));
    // its own report folder: the demo config points eval.out at the cross-entropy model's
    const scstEval = { ...config, eval: { ...config.eval, out: path.join(model, 'eval-test') } };
    const ev = await timed('scst-eval', () => runEval(scstEval, { model, noThumbnails: true }));
    scst = { model, train: tuned, eval: ev };
  }

  seconds.total = (Date.now() - t0) / 1000;
  const f = evaluated.files;
  const artifacts: DemoArtifacts = {
    data: data.out,
    prepared: paths.prepared,
    features: paths.features,
    model: paths.model,
    lossChart: path.join(paths.model, 'loss.svg'),
    predictions: f.predictions,
    results: f.results,
    report: f.report,
    html: f.html,
    samples,
    captions,
  };
  return {
    out,
    scenes,
    weights,
    images,
    config,
    train: trained,
    eval: evaluated,
    caption: captioned,
    artifacts,
    seconds,
    ...(scst ? { scst } : {}),
  };
}

/** The closing summary: metrics against the baseline, where everything is, what to try next. */
export function demoSummary(r: DemoResult): string {
  const m = r.eval.report.metrics;
  const b = r.eval.report.baseline;
  const a = r.artifacts;
  const lines: string[] = [];
  lines.push('');
  if (b) {
    const ratio = b.metrics.Bleu_4 > 0 ? ` (${(m.Bleu_4 / b.metrics.Bleu_4).toFixed(2)}x)` : '';
    const verdict =
      m.Bleu_4 > b.metrics.Bleu_4
        ? 'the model beats the image-blind baseline: it learned from the pictures'
        : 'the model does NOT beat the image-blind baseline: train longer (--epochs) or on more images (--images)';
    lines.push(
      `test BLEU-4: model ${m.Bleu_4.toFixed(4)} vs image-blind baseline ${b.metrics.Bleu_4.toFixed(4)}${ratio}: ${verdict}.`,
    );
    lines.push(`  baseline = ${b.explanation}.`);
  }
  if (r.weights === 'random')
    lines.push('  (features from a VGG16 with RANDOM weights: fine for coloured shapes, useless for photos)');
  if (r.scst) {
    const s = r.scst.eval.report.metrics;
    lines.push(
      `test CIDEr-D: cross-entropy ${m.CIDEr.toFixed(4)}, self-critical ${s.CIDEr.toFixed(4)}   (test BLEU-4: cross-entropy ${m.Bleu_4.toFixed(4)}, self-critical ${s.Bleu_4.toFixed(4)})`,
    );
    lines.push(
      `  self-critical model: ${r.scst.model}, its test report in ${path.join(r.scst.model, 'eval-test')} (best of ${r.scst.train.epochs} epochs by validation CIDEr-D: epoch ${r.scst.train.bestEpoch}; epoch 0 is the cross-entropy model)`,
    );
  }
  lines.push('');
  lines.push(
    `timings: ${Object.entries(r.seconds)
      .map(([k, v]) => `${k} ${v.toFixed(1)}s`)
      .join(', ')}`,
  );
  lines.push('');
  lines.push('artifacts:');
  const rows: [string, string][] = [
    ['demo dataset (images, captions)', a.data],
    ['prepared dataset', a.prepared],
    ['feature cache', a.features],
    ['trained model', a.model],
    ['loss chart', a.lossChart],
    ['test predictions (JSONL)', a.predictions],
    ['test predictions (COCO results)', a.results],
    ['eval report (JSON)', a.report],
    ['eval report (HTML, open in a browser)', a.html],
    ['sample images', a.samples],
    ['their captions (JSONL)', a.captions],
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) lines.push(`  ${k.padEnd(w)}  ${v}`);
  lines.push('');
  lines.push('next, try:');
  lines.push(`  captioner caption ${a.samples} -m ${a.model}                 # caption a folder of images`);
  lines.push(
    `  captioner eval -m ${a.model} --beam 5 --out ${path.join(r.out, 'eval-beam5')}   # score with a wider beam`,
  );
  lines.push(`  captioner serve -m ${a.model}                                 # a web page to upload images to`);
  lines.push(`  captioner score --candidates ${a.results} --references ${a.prepared}`);
  return lines.join('\n') + '\n';
}
