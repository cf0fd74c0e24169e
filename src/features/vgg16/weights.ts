// VGG16 weights: the shapes the spec expects, validation of a loaded set, seeded Keras-like random
// weights (the demo's "random" encoder; caption time regenerates them from the seed), and
// `loadVgg16Weights`, which resolves 'auto' | 'random' | a Keras .h5 | a TF.js model.json.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ModelError } from '../../errors.js';
import { VGG16_LAYERS, type LayerWeights, type Vgg16Layer, type Vgg16Weights } from './spec.js';
import { expectedShapes, same, shapeStr, size } from './shapes.js';
import { readKerasH5 } from './h5.js';
import { readTfjsLayersModel } from './tfjsFolder.js';
import { fileDigest, sidecarFor } from '../weights/hash.js';
import { KERAS_VGG16_FILES, weightsCacheDir, WEIGHTS_COMMAND } from '../weights/cache.js';

export { expectedShapes, type ExpectedShapes } from './shapes.js';

/** Number of parameters (kernel + bias values) in a weights set. */
export function countParams(weights: Vgg16Weights): number {
  let n = 0;
  for (const w of weights.values()) n += w.kernel.length + w.bias.length;
  return n;
}

/** Parameters the spec has, with or without its dense head. */
export function specParams(layers: readonly Vgg16Layer[] = VGG16_LAYERS, includeTop = true): number {
  let n = 0;
  for (const s of expectedShapes(layers).values()) if (includeTop || !s.top) n += size(s.kernel) + size(s.bias);
  return n;
}

/**
 * Check a weights set against the spec: every conv layer present, and either all dense layers or none
 * (a no-top set). Shapes and array lengths must match. Returns whether the dense head is there.
 * Throws ModelError naming the layer and `source`.
 */
export function checkWeights(
  weights: Vgg16Weights,
  source: string,
  layers: readonly Vgg16Layer[] = VGG16_LAYERS,
): { includeTop: boolean } {
  const expected = expectedShapes(layers);
  const topNames = [...expected].filter(([, s]) => s.top).map(([n]) => n);
  const presentTop = topNames.filter((n) => weights.has(n));
  for (const [name, exp] of expected) {
    const w = weights.get(name);
    if (!w) {
      if (exp.top && presentTop.length === 0) continue;
      throw new ModelError(
        `${source}: no weights for layer ${name}${exp.top ? ` (the file has ${presentTop.join(', ')} but not all of ${topNames.join(', ')})` : ''}`,
      );
    }
    if (!same(w.kernelShape, exp.kernel)) {
      throw new ModelError(
        `${source}: layer ${name}: kernel shape ${shapeStr(w.kernelShape)}, expected ${shapeStr(exp.kernel)} (Keras VGG16, channels-last)`,
      );
    }
    if (w.kernel.length !== size(exp.kernel))
      throw new ModelError(
        `${source}: layer ${name}: kernel has ${w.kernel.length} values, expected ${size(exp.kernel)}`,
      );
    if (w.bias.length !== exp.bias[0])
      throw new ModelError(`${source}: layer ${name}: bias has ${w.bias.length} values, expected ${exp.bias[0]}`);
  }
  for (const name of weights.keys()) {
    if (!expected.has(name)) throw new ModelError(`${source}: unexpected layer ${name} (not a VGG16 layer)`);
  }
  return { includeTop: presentTop.length > 0 };
}

/**
 * Fill `out` with glorot_uniform values: U(-limit, limit), limit = sqrt(6 / (fanIn + fanOut)).
 * This is mulberry32 (src/util/random.ts `rng(seed)`) inlined for speed: value i is exactly
 * `(r() * 2 - 1) * limit` for the i-th draw of rng(seed), rounded to float32.
 */
export function fillGlorot(out: Float32Array, seed: number, limit: number): void {
  let a = seed | 0;
  const n = out.length;
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) | 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * limit;
  }
}

/** The seed of one layer's stream: each layer has its own, so the no-top set is a prefix of the full one. */
export function layerSeed(seed: number, layerIndex: number): number {
  return (Math.imul((seed >>> 0) ^ 0x5bd1e995, 0x9e3779b1) + Math.imul(layerIndex + 1, 0x85ebca6b)) >>> 0;
}

/**
 * Deterministic Keras-like initial weights: glorot_uniform kernels (conv fans include the 3x3
 * receptive field, as Keras computes them), zero biases. Same seed, same weights, on every machine.
 * About 1 s for the full 138M values.
 */
export function randomVgg16Weights(
  seed: number,
  opts: { includeTop?: boolean; layers?: readonly Vgg16Layer[] } = {},
): Vgg16Weights {
  const includeTop = opts.includeTop ?? true;
  const weights: Vgg16Weights = new Map();
  let index = 0;
  for (const [name, exp] of expectedShapes(opts.layers ?? VGG16_LAYERS)) {
    const i = index++;
    if (exp.top && !includeTop) continue;
    const receptive = exp.kernel.length === 4 ? exp.kernel[0] * exp.kernel[1] : 1;
    const fanIn = exp.kernel[exp.kernel.length - 2] * receptive;
    const fanOut = exp.kernel[exp.kernel.length - 1] * receptive;
    const kernel = new Float32Array(size(exp.kernel));
    fillGlorot(kernel, layerSeed(seed, i), Math.sqrt(6 / (fanIn + fanOut)));
    weights.set(name, {
      kernel,
      kernelShape: [...exp.kernel],
      bias: new Float32Array(exp.bias[0]),
    } satisfies LayerWeights);
  }
  return weights;
}

export interface LoadedVgg16Weights {
  weights: Vgg16Weights;
  /** `random:seed=N`, or `sha256:<hex>` of the file (for a TF.js folder: of model.json then its TF.js weight shards, in manifest order). */
  fingerprint: string;
  /** 'random' or the absolute path that was read. */
  source: string;
  includeTop: boolean;
}

export interface LoadOptions {
  /** Seed for 'random'. */
  seed: number;
  /** Where `captioner weights vgg16` stores the Keras files, and file digests are kept (default: weightsCacheDir()). */
  cacheDir?: string;
  /** Fail (ModelError) unless the weights have the dense head (needed for fc2 features). */
  requireTop?: boolean;
  /** For 'random': generate the dense head too (default true; false saves 124M values). */
  includeTop?: boolean;
  /** The layers to build (default: the Keras VGG16's; a reduced list builds a smaller network of the same kind). */
  layers?: readonly Vgg16Layer[];
}

/**
 * Resolve `spec` ('auto' | 'random' | path to a Keras .h5 | path to a TF.js model.json or its folder)
 * into validated weights. 'auto' is the file `captioner weights vgg16` cached (the full one, else the
 * no-top one when the top is not required).
 */
export async function loadVgg16Weights(spec: string, opts: LoadOptions): Promise<LoadedVgg16Weights> {
  const layers = opts.layers ?? VGG16_LAYERS;
  if (spec === 'random') {
    const includeTop = opts.includeTop ?? true;
    if (opts.requireTop && !includeTop)
      throw new ModelError('random weights: requireTop and includeTop=false contradict each other');
    return {
      weights: randomVgg16Weights(opts.seed, { includeTop, layers }),
      fingerprint: `random:seed=${opts.seed}`,
      source: 'random',
      includeTop,
    };
  }
  const cacheDir = opts.cacheDir ?? weightsCacheDir();
  const file = spec === 'auto' ? await resolveAuto(cacheDir, opts.requireTop ?? false) : await resolvePath(spec);
  const isJson = file.toLowerCase().endsWith('.json');
  const { weights, files } = isJson
    ? await readTfjsLayersModel(file, layers)
    : { weights: await readKerasH5(file, layers), files: [file] };
  const { includeTop } = checkWeights(weights, file, layers);
  if (opts.requireTop && !includeTop) {
    throw new ModelError(
      `${file}: has no fc1/fc2/predictions layers (a no-top file); fc2 features need the full VGG16: run \`${WEIGHTS_COMMAND}\`, or use encoder.layer block5_conv3 / block5_pool`,
    );
  }
  const digest = await fileDigest(files, sidecarFor(file, cacheDir));
  return { weights, fingerprint: `sha256:${digest.sha256}`, source: file, includeTop };
}

async function resolvePath(spec: string): Promise<string> {
  let file = path.resolve(spec);
  let st;
  try {
    st = await fs.stat(file);
  } catch (e) {
    throw new ModelError(
      `${spec}: weights file not found (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); encoder.weights takes auto, random, a Keras .h5 file or a TF.js model.json`,
    );
  }
  if (st.isDirectory()) {
    const json = path.join(file, 'model.json');
    try {
      await fs.access(json);
    } catch {
      throw new ModelError(
        `${spec}: is a folder without model.json; encoder.weights takes auto, random, a Keras .h5 file or a TF.js model.json`,
      );
    }
    file = json;
  }
  return file;
}

async function resolveAuto(cacheDir: string, requireTop: boolean): Promise<string> {
  const full = path.join(cacheDir, KERAS_VGG16_FILES.top.name);
  const notop = path.join(cacheDir, KERAS_VGG16_FILES.notop.name);
  const has = async (f: string) =>
    fs.access(f).then(
      () => true,
      () => false,
    );
  if (await has(full)) return full;
  if (await has(notop)) {
    if (!requireTop) return notop;
    throw new ModelError(
      `encoder.weights auto: only the no-top VGG16 file is cached (${notop}); fc2 features need the full one: run \`${WEIGHTS_COMMAND}\` (or use encoder.layer block5_conv3 / block5_pool)`,
    );
  }
  throw new ModelError(
    `encoder.weights auto: no VGG16 weights in ${cacheDir}; run \`${WEIGHTS_COMMAND}\` to download Keras's ImageNet weights (528 MB), ` +
      `or \`${WEIGHTS_COMMAND} --from FILE\` to import a copy (e.g. ~/.keras/models/${KERAS_VGG16_FILES.top.name}); ` +
      `encoder.weights random gives untrained weights (demo only)`,
  );
}
