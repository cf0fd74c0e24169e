// Reads Keras HDF5 weight files (model.save_weights / the keras-applications downloads) with h5wasm.
// Layout: root attribute layer_names; one group per layer with attribute weight_names, whose entries
// are dataset paths inside the group. Handles the old names (block1_conv1_W_1:0, block1_conv1_b_1:0),
// Keras 2 names (block1_conv1/kernel:0, stored at block1_conv1/block1_conv1/kernel:0), model-scoped
// names (vgg16/block1_conv1/kernel:0) and whole-model saves (everything under /model_weights).
import { promises as fs } from 'node:fs';
import { ModelError } from '../../errors.js';
import { log } from '../../log.js';
import type { Vgg16Layer, Vgg16Weights } from './spec.js';
import { expectedShapes, shapeStr } from './shapes.js';

type H5 = typeof import('h5wasm/node');
type H5Group = import('h5wasm/node').Group;
type H5Dataset = import('h5wasm/node').Dataset;

let h5Promise: Promise<H5> | null = null;
async function h5(): Promise<H5> {
  h5Promise ??= import('h5wasm/node').then(async (m) => {
    await m.ready;
    return m;
  });
  return h5Promise;
}

const HDF5_SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Datasets bigger than this many values are read in slices along axis 0 (keeps the wasm heap small). */
const SLICE_VALUES = 4 << 20;

/** The kind of a weight from its name: 'kernel', 'bias' or null when the name does not say. */
export function weightRole(name: string): 'kernel' | 'bias' | null {
  const base = name.replace(/:\d+$/, '').split('/').pop() ?? '';
  if (base === 'kernel' || /(^|_)W(_\d+)?$/.test(base)) return 'kernel';
  if (base === 'bias' || /(^|_)b(_\d+)?$/.test(base)) return 'bias';
  return null;
}

function attrStrings(group: H5Group, name: string): string[] | null {
  const attrs = group.attrs;
  const read = (a: string): unknown => (attrs[a] ? attrs[a].value : undefined);
  let v = read(name);
  if (v === undefined) {
    // Keras splits attributes over 64 KB into name0, name1, ...
    const parts: unknown[] = [];
    for (let i = 0; read(`${name}${i}`) !== undefined; i++) parts.push(...toArray(read(`${name}${i}`)));
    if (!parts.length) return null;
    v = parts;
  }
  return toArray(v).map((x) => (x instanceof Uint8Array ? new TextDecoder().decode(x) : String(x)));
}

function toArray(v: unknown): unknown[] {
  if (v === null || v === undefined) return [];
  if (Array.isArray(v)) return v;
  if (typeof v === 'string') return [v];
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<unknown>);
  return [v];
}

function isGroup(e: unknown): e is H5Group {
  return !!e && typeof (e as H5Group).keys === 'function' && typeof (e as H5Group).get === 'function';
}
function isDataset(e: unknown): e is H5Dataset {
  return !!e && Array.isArray((e as H5Dataset).shape) && typeof (e as H5Dataset).slice === 'function';
}

function safeGet(group: H5Group, p: string): unknown {
  try {
    return group.get(p);
  } catch {
    return null;
  }
}

/** Float32 copy of a dataset, read in row slices when large. */
function readFloat32(ds: H5Dataset, file: string, where: string): Float32Array {
  const shape = ds.shape ?? [];
  const n = shape.reduce((a, b) => a * b, 1);
  const dtype = String(ds.dtype);
  if (!/^[<>]?[fd]$/.test(dtype))
    throw new ModelError(`${file}: ${where}: dtype ${dtype}, expected float32 or float64`);
  const out = new Float32Array(n);
  if (n <= SLICE_VALUES || shape.length === 0) {
    const v = ds.value as ArrayLike<number>;
    if (!v || v.length !== n) throw new ModelError(`${file}: ${where}: cannot read ${n} values`);
    out.set(v);
    return out;
  }
  const rowValues = n / shape[0];
  const rowsPer = Math.max(1, Math.floor(SLICE_VALUES / rowValues));
  for (let r = 0; r < shape[0]; r += rowsPer) {
    const end = Math.min(shape[0], r + rowsPer);
    const v = ds.slice([[r, end]]) as ArrayLike<number>;
    if (!v || v.length !== (end - r) * rowValues)
      throw new ModelError(`${file}: ${where}: cannot read rows ${r}..${end}`);
    out.set(v, r * rowValues);
  }
  return out;
}

/**
 * Read the weights of the spec's layers from a Keras .h5 file. Layers the spec does not know (input,
 * pool, flatten: no weights) are ignored; shape checks against the spec happen here, per layer, and
 * completeness is checked by checkWeights.
 */
export async function readKerasH5(file: string, layers: readonly Vgg16Layer[]): Promise<Vgg16Weights> {
  let head: Buffer;
  try {
    const h = await fs.open(file, 'r');
    try {
      head = Buffer.alloc(4096);
      head = head.subarray(0, (await h.read(head, 0, 4096, 0)).bytesRead);
    } finally {
      await h.close();
    }
  } catch (e) {
    throw new ModelError(
      `${file}: weights file not found (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  // The HDF5 signature sits at 0, 512, 1024, 2048... (after an optional user block).
  if (![0, 512, 1024, 2048].some((o) => head.length >= o + 8 && head.subarray(o, o + 8).equals(HDF5_SIGNATURE))) {
    throw new ModelError(`${file}: not an HDF5 file; encoder.weights takes a Keras .h5 file or a TF.js model.json`);
  }
  const lib = await h5();
  let f: InstanceType<H5['File']>;
  try {
    f = new lib.File(file, 'r');
  } catch (e) {
    throw new ModelError(`${file}: not a readable HDF5 file (${(e as Error).message})`);
  }
  try {
    const expected = expectedShapes(layers);
    const mw = safeGet(f, 'model_weights');
    const root: H5Group = isGroup(mw) ? mw : f;
    const names = attrStrings(root, 'layer_names') ?? root.keys();
    if (!names.length) throw new ModelError(`${file}: no layers (not a Keras weights file?)`);
    const weights: Vgg16Weights = new Map();
    for (const layer of names) {
      const exp = expected.get(layer);
      if (!exp) continue;
      const g = safeGet(root, layer);
      if (!isGroup(g)) throw new ModelError(`${file}: layer ${layer} is listed in layer_names but has no group`);
      const wnames = attrStrings(g, 'weight_names') ?? g.keys();
      const found: { name: string; ds: H5Dataset }[] = [];
      for (const wn of wnames) {
        // Keras stores each weight at its name relative to the layer group; be lenient about scopes.
        const tries = [wn, `${layer}/${wn}`, wn.split('/').slice(-2).join('/'), wn.split('/').pop() ?? wn];
        const ds = tries.map((p) => safeGet(g, p)).find(isDataset);
        if (!ds) throw new ModelError(`${file}: layer ${layer}: weight ${wn} is listed but not stored`);
        found.push({ name: wn, ds });
      }
      if (found.length !== 2)
        throw new ModelError(
          `${file}: layer ${layer}: ${found.length} weights (${wnames.join(', ') || 'none'}), expected a kernel and a bias`,
        );
      let kernel = found.find((w) => weightRole(w.name) === 'kernel');
      let bias = found.find((w) => weightRole(w.name) === 'bias');
      if (!kernel || !bias || kernel === bias) [kernel, bias] = found; // Keras order: kernel, bias
      const kshape = [...(kernel.ds.shape ?? [])];
      const bshape = [...(bias.ds.shape ?? [])];
      if (kshape.join() !== exp.kernel.join()) {
        throw new ModelError(
          `${file}: layer ${layer}: kernel ${kernel.name} has shape ${shapeStr(kshape)}, expected ${shapeStr(exp.kernel)} (Keras VGG16, channels-last)`,
        );
      }
      if (bshape.join() !== exp.bias.join())
        throw new ModelError(
          `${file}: layer ${layer}: bias ${bias.name} has shape ${shapeStr(bshape)}, expected ${shapeStr(exp.bias)}`,
        );
      weights.set(layer, {
        kernel: readFloat32(kernel.ds, file, `${layer}/${kernel.name}`),
        kernelShape: kshape,
        bias: readFloat32(bias.ds, file, `${layer}/${bias.name}`),
      });
      log.debug(`${file}: ${layer} ${shapeStr(kshape)} from ${kernel.name}`);
    }
    return weights;
  } catch (e) {
    if (e instanceof ModelError) throw e;
    throw new ModelError(`${file}: cannot read as Keras HDF5 weights (${(e as Error).message})`);
  } finally {
    try {
      f.close();
    } catch {
      // already broken
    }
  }
}
