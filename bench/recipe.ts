// Benchmark group 'recipe': which training recipe (model.init, train.labelSmoothing, train.warmupSteps)
// trains the demo's decoders best. For each scene kind (single: one object an image; multi: several) the
// demo dataset is rendered, prepared and encoded once (random-weight VGG16: fc2 for merge, block5_pool for
// attention and the transformer), then every decoder trains with every recipe and 3 seeds (train.seed
// 42, 43, 44) at configs/demo.yaml's settings (12 epochs at most, early stopping and learning-rate decay
// as the demo has them), and its best model is evaluated on the test split as the demo does it (beam 3;
// --quick: beam 1). Recipes: model.init keras and torch, and label smoothing 0.1 and a 50-step warm-up
// each on top of the decoder's default initialisation (model.init auto). One row per scene x decoder x recipe: the mean best validation loss (value), and in the
// notes the seed range, the mean validation loss at epochs 1, 3, 6, 9 and 12 (a run that stopped early
// contributes its last value to the later epochs), test BLEU-4 and CIDEr-D (mean and range) and the
// epochs run. --quick renders the quick demo's 300 images, the default the full demo's 1000.
// CAPTIONER_BENCH_RECIPES (names, comma-separated), CAPTIONER_BENCH_DECODERS and CAPTIONER_BENCH_SCENES
// narrow the grid; CAPTIONER_BENCH_SEEDS sets the number of seeds. No peer: the PyTorch side of these
// questions is the parity group's (which follows the same settings).
import * as os from 'node:os';
import * as path from 'node:path';
import { demoConfig } from '#dist/demo/run.js';
import { writeDemoDataset } from '#dist/prep/demo.js';
import { runPrep } from '#dist/prep/run.js';
import { runFeatures } from '#dist/features/run.js';
import { runTrain } from '#dist/train/stage.js';
import { runEval } from '#dist/eval/run.js';
import type { Config } from '#dist/config/schema.js';
import { inScratch } from './scratch.js';
import type { BenchModule, BenchOptions, BenchRow } from './types.js';

/** The recipes compared: a name and the config settings that make it. */
const plain = ['train.labelSmoothing=0', 'train.warmupSteps=0'];
export const RECIPES: { name: string; sets: string[] }[] = [
  { name: 'keras', sets: ['model.init=keras', ...plain] },
  { name: 'torch', sets: ['model.init=torch', ...plain] },
  // on top of each decoder's own initialisation (model.init auto: merge torch, attention and transformer keras)
  { name: 'auto + smoothing 0.1', sets: ['model.init=auto', 'train.labelSmoothing=0.1', 'train.warmupSteps=0'] },
  { name: 'auto + warm-up 50', sets: ['model.init=auto', 'train.labelSmoothing=0', 'train.warmupSteps=50'] },
];

const DECODERS = ['merge', 'attention', 'transformer'] as const;
const SCENES = ['single', 'multi'] as const;
const CHECKPOINTS = [1, 3, 6, 9, 12];

const pick = <T extends string>(env: string | undefined, all: readonly T[]): T[] => {
  if (!env) return [...all];
  const want = env.split(',').map((s) => s.trim());
  const bad = want.filter((w) => !all.includes(w as T));
  if (bad.length) throw new Error(`unknown ${bad.join(', ')} (known: ${all.join(', ')})`);
  return want as T[];
};

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const f3 = (v: number) => v.toFixed(3);
const range = (xs: number[]) => `${f3(Math.min(...xs))}..${f3(Math.max(...xs))}`;

interface SeedResult {
  best: number;
  /** Validation loss after each epoch run. */
  val: number[];
  bleu4: number;
  cider: number;
  epochs: number;
  seconds: number;
}

/** Validation loss at `epoch` (1-based); a run that stopped earlier gives its last value. */
const valAt = (r: SeedResult, epoch: number) => r.val[Math.min(epoch, r.val.length) - 1];

export const bench: BenchModule = {
  group: 'recipe',
  async run(o: BenchOptions): Promise<BenchRow[]> {
    const images = o.quick ? 300 : 1000;
    const seeds = Number(process.env.CAPTIONER_BENCH_SEEDS ?? 3);
    const recipeNames = pick(
      process.env.CAPTIONER_BENCH_RECIPES,
      RECIPES.map((r) => r.name),
    );
    const recipes = RECIPES.filter((r) => recipeNames.includes(r.name));
    const decoders = pick(process.env.CAPTIONER_BENCH_DECODERS, DECODERS);
    const scenes = pick(process.env.CAPTIONER_BENCH_SCENES, SCENES);
    return inScratch('recipe', async (tmp) => {
      const load = os.loadavg()[0];
      const rows: BenchRow[] = [];
      for (const scenesKind of scenes) {
        const dir = path.join(tmp, scenesKind);
        await writeDemoDataset({ out: path.join(dir, 'data'), images, scenes: scenesKind });
        let prepared = false;
        const encoded = new Set<string>();
        for (const decoder of decoders) {
          for (const recipe of recipes) {
            const results: SeedResult[] = [];
            for (let s = 0; s < seeds; s++) {
              const base = await demoConfig(dir, {
                quick: o.quick,
                weights: 'random',
                sets: [`model.type=${decoder}`, ...recipe.sets],
              });
              const tag = `${decoder}-${recipe.name.replace(/[^a-z0-9]+/gi, '_')}-seed${s}`;
              const config: Config = {
                ...base,
                features: { ...base.features, out: path.join(dir, `features-${base.encoder.layer}`) },
                train: { ...base.train, seed: base.train.seed + s, out: path.join(dir, 'runs', tag) },
                eval: { ...base.eval, out: path.join(dir, 'runs', tag, 'eval-test') },
              };
              if (!prepared) {
                await runPrep(config);
                prepared = true;
              }
              if (!encoded.has(config.encoder.layer)) {
                await runFeatures(config);
                encoded.add(config.encoder.layer);
              }
              const t0 = Date.now();
              const run = await runTrain(config);
              const seconds = (Date.now() - t0) / 1000;
              const ev = await runEval(config, { model: run.out, noThumbnails: true });
              const m = ev.report.metrics;
              results.push({
                best: run.bestValLoss ?? NaN,
                val: run.history.map((h) => h.valLoss),
                bleu4: m.Bleu_4,
                cider: m.CIDEr,
                epochs: run.epochs,
                seconds,
              });
              process.stderr.write(
                `  recipe: ${scenesKind} ${decoder} ${recipe.name} seed ${s}: best val ${f3(run.bestValLoss ?? NaN)}, BLEU-4 ${f3(m.Bleu_4)}, CIDEr-D ${f3(m.CIDEr)}, ${run.epochs} epochs, ${seconds.toFixed(0)} s\n`,
              );
            }
            const at = CHECKPOINTS.map((e) => `${e}: ${f3(mean(results.map((r) => valAt(r, e))))}`).join(', ');
            rows.push({
              bench: 'recipe',
              name: `${scenesKind} scenes, ${decoder}, ${recipe.name}: best val loss (mean of ${seeds} seed${seeds > 1 ? 's' : ''})`,
              value: mean(results.map((r) => r.best)),
              unit: 'nats/token',
              notes:
                `seeds ${range(results.map((r) => r.best))}; val loss at epoch ${at}; ` +
                `test BLEU-4 ${f3(mean(results.map((r) => r.bleu4)))} (${range(results.map((r) => r.bleu4))}), ` +
                `CIDEr-D ${f3(mean(results.map((r) => r.cider)))} (${range(results.map((r) => r.cider))}); ` +
                `epochs ${results.map((r) => r.epochs).join('/')}; train ${mean(results.map((r) => r.seconds)).toFixed(0)} s each; ` +
                `${images} images (${o.quick ? 'demo --quick' : 'demo'} settings: ${recipe.sets.join(' ')}); ` +
                `${os.availableParallelism()} cores, load ${load.toFixed(1)} at start`,
            });
          }
        }
      }
      return rows;
    });
  },
};
