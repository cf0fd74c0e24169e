// Writes the built-in demo dataset to a folder: images rendered from SVG with sharp, Flickr8k-format
// captions and split files, and demo.json recording the parameters (written last: it marks a complete
// dataset, so a second run with the same parameters does nothing). Scenes and captions: demo-scene.ts.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { UsageError } from '../errors.js';
import { log, progress } from '../log.js';
import { ensureDir, exists, writeFileAtomic, writeJsonAtomic } from '../util/fsx.js';
import { checkStageFolder } from '../util/stagedir.js';
import {
  CAPTIONS_PER_IMAGE,
  DEMO_VERSION,
  SCENE_KINDS,
  demoTexts,
  imageName,
  makeScene,
  sceneSvg,
  type SceneKind,
} from './demo-scene.js';

export interface DemoDataOptions {
  /** Output folder. */
  out: string;
  /** Number of images (default 1000). */
  images?: number;
  /** Dataset seed (default 1). */
  seed?: number;
  /** Image side in pixels (default 224). */
  size?: number;
  /** single (default): one or two shapes; multi: 2-3 shapes, captions with counts and relations. */
  scenes?: SceneKind;
  /** Overwrite a folder that holds a captions.txt not written by demo-data. */
  force?: boolean;
  /** Images rendered at once (default: 2 x cores). */
  concurrency?: number;
}

/** The contents of DIR/demo.json. */
export interface DemoManifest {
  generator: 'captioner demo-data';
  version: number;
  seed: number;
  /** Absent in datasets written before multi scenes existed: those are single. */
  scenes: SceneKind;
  images: number;
  size: number;
  format: 'jpeg';
  captionsPerImage: number;
  split: { train: number; val: number; test: number };
}

export interface DemoDataResult {
  out: string;
  captionsFile: string;
  imagesDir: string;
  manifest: DemoManifest;
  /** False when the folder already held this exact dataset. */
  rendered: boolean;
}

export { DEMO_DEFAULTS } from './demo-scene.js';
import { DEMO_DEFAULTS } from './demo-scene.js';
export const JPEG_QUALITY = 92;

function checkInt(name: string, v: number, lo: number, hi: number): void {
  if (!Number.isInteger(v) || v < lo || v > hi)
    throw new UsageError(`--${name} must be an integer from ${lo} to ${hi}, got ${v}`);
}

/** A usage error unless `v` names a scene kind. */
export function checkScenes(v: string): SceneKind {
  if (!(SCENE_KINDS as readonly string[]).includes(v))
    throw new UsageError(`--scenes must be one of ${SCENE_KINDS.join(', ')}, got "${v}"`);
  return v as SceneKind;
}

/** Render one scene to JPEG bytes. */
export function renderDemoImage(
  seed: number,
  index: number,
  size: number,
  scenes: SceneKind = 'single',
): Promise<Buffer> {
  const svg = sceneSvg(makeScene(seed, index, scenes), size);
  return sharp(Buffer.from(svg)).jpeg({ quality: JPEG_QUALITY }).toBuffer();
}

async function readManifest(file: string): Promise<DemoManifest | undefined> {
  try {
    const m = JSON.parse(await fs.readFile(file, 'utf8')) as DemoManifest;
    return { ...m, scenes: m.scenes ?? 'single' };
  } catch {
    return undefined;
  }
}

/** DIR/demo.json of a complete (or once complete) demo dataset, if there is one. */
export const readDemoManifest = (dir: string) => readManifest(path.join(dir, 'demo.json'));

async function isComplete(out: string, want: Omit<DemoManifest, 'split'>): Promise<boolean> {
  const m = await readManifest(path.join(out, 'demo.json'));
  if (!m) return false;
  const same = (Object.keys(want) as (keyof typeof want)[]).every((k) => m[k] === want[k]);
  if (!same) return false;
  for (const f of ['captions.txt', 'trainImages.txt', 'valImages.txt', 'testImages.txt'])
    if (!(await exists(path.join(out, f)))) return false;
  const present = new Set(await fs.readdir(path.join(out, 'images')).catch(() => [] as string[]));
  for (let i = 0; i < want.images; i++) if (!present.has(imageName(i))) return false;
  return true;
}

/** Run `task(i)` for i in 0..n-1 with at most `limit` in flight. */
async function pool(n: number, limit: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
}

/** Write (or reuse) the demo dataset in `opts.out`. */
export async function writeDemoDataset(opts: DemoDataOptions): Promise<DemoDataResult> {
  const images = opts.images ?? DEMO_DEFAULTS.images;
  const seed = opts.seed ?? DEMO_DEFAULTS.seed;
  const size = opts.size ?? DEMO_DEFAULTS.size;
  const scenes = checkScenes(opts.scenes ?? DEMO_DEFAULTS.scenes);
  checkInt('images', images, 1, 1_000_000);
  checkInt('seed', seed, 0, 0xffffffff);
  checkInt('size', size, 32, 4096);
  const out = opts.out;
  // a file in the way, or another stage's artifact (a prepared dataset, a run), is refused untouched
  await checkStageFolder(out, { kind: 'captioner.demo-data', option: '--out' });
  const imagesDir = path.join(out, 'images');
  const captionsFile = path.join(out, 'captions.txt');
  const manifestFile = path.join(out, 'demo.json');
  const want = {
    generator: 'captioner demo-data' as const,
    version: DEMO_VERSION,
    seed,
    scenes,
    images,
    size,
    format: 'jpeg' as const,
    captionsPerImage: CAPTIONS_PER_IMAGE,
  };

  if (await isComplete(out, want)) {
    const manifest = (await readManifest(manifestFile))!;
    log.info(`demo-data: ${out} already holds ${images} ${scenes} images (seed ${seed}, ${size}px); nothing to do`);
    return { out, captionsFile, imagesDir, manifest, rendered: false };
  }
  if (!opts.force && (await exists(captionsFile)) && !(await exists(manifestFile))) {
    throw new UsageError(
      `${out}: holds a captions.txt that demo-data did not write; choose another --out or pass --force`,
    );
  }

  const old = await readManifest(manifestFile);
  if (old && (['version', 'seed', 'scenes', 'size'] as const).some((k) => old[k] !== want[k])) {
    // same file names, other pictures: a feature cache keyed by image name would silently mix them
    log.warn(
      `demo-data: ${out} held ${old.scenes} images (seed ${old.seed}, ${old.size}px); they are replaced by ${scenes} images (seed ${seed}, ${size}px) ` +
        'under the same names: recompute any feature cache made from the old ones (`captioner features` into a fresh folder)',
    );
  }
  const texts = demoTexts(seed, images, scenes);
  const manifest: DemoManifest = {
    ...want,
    split: { train: texts.split.train.length, val: texts.split.val.length, test: texts.split.test.length },
  };
  // the old captions and manifest go first: an interrupted run must not look complete (nor like a
  // Flickr8k dataset whose captions describe other pictures); captions first, so that a crash in
  // between leaves a manifest that marks the folder as ours and the next run starts over
  await fs.rm(captionsFile, { force: true });
  await fs.rm(manifestFile, { force: true });
  await ensureDir(imagesDir);

  const started = Date.now();
  const bar = progress('demo-data', images);
  try {
    const limit = opts.concurrency ?? Math.max(2, 2 * os.availableParallelism());
    await pool(images, limit, async (i) => {
      await writeFileAtomic(path.join(imagesDir, imageName(i)), await renderDemoImage(seed, i, size, scenes));
      bar.tick();
    });
  } finally {
    bar.stop();
  }
  // images of an earlier, larger run would be unlisted clutter
  const keep = new Set(Array.from({ length: images }, (_, i) => imageName(i)));
  for (const f of await fs.readdir(imagesDir)) {
    if (/^demo_\d+\.jpg$/.test(f) && !keep.has(f)) await fs.rm(path.join(imagesDir, f), { force: true });
  }
  await writeFileAtomic(captionsFile, texts.captions);
  await writeFileAtomic(path.join(out, 'trainImages.txt'), texts.trainImages);
  await writeFileAtomic(path.join(out, 'valImages.txt'), texts.valImages);
  await writeFileAtomic(path.join(out, 'testImages.txt'), texts.testImages);
  await writeJsonAtomic(manifestFile, manifest);
  const secs = (Date.now() - started) / 1000;
  log.info(
    `demo-data: wrote ${images} ${scenes} images and ${images * CAPTIONS_PER_IMAGE} captions to ${out} in ${secs.toFixed(1)}s ` +
      `(train ${manifest.split.train}, val ${manifest.split.val}, test ${manifest.split.test})`,
  );
  return { out, captionsFile, imagesDir, manifest, rendered: true };
}
