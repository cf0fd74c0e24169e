// Reads VGG16 weights from a TF.js layers-model folder (model.json + binary shards, as written by
// tensorflowjs_converter or tf.LayersModel.save('file://...')) without tfjs-node: parses the
// weightsManifest and reads each weight's byte range straight from the shards. Weights are mapped to
// layers by name (".../block1_conv1/kernel", ".../fc1/bias"); weights of other layers are skipped.
// "Shard" here is TF.js's own word for its weight files (group1-shard1of1.bin), kept as that format names them.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ModelError } from '../../errors.js';
import type { Vgg16Layer, Vgg16Weights } from './spec.js';
import { expectedShapes, shapeStr, size } from './shapes.js';

interface ManifestEntry {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { dtype: 'uint8' | 'uint16' | 'float16'; scale?: number; min?: number };
}
interface ManifestGroup {
  paths: string[];
  weights: ManifestEntry[];
}

const BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2 };

/** Layer and role of a TF.js weight name, or null when it is no kernel/bias of a spec layer. */
export function tfjsWeightTarget(
  name: string,
  layerNames: ReadonlySet<string>,
): { layer: string; role: 'kernel' | 'bias' } | null {
  const parts = name.replace(/:\d+$/, '').split('/');
  const role = parts[parts.length - 1];
  if (role !== 'kernel' && role !== 'bias') return null;
  for (let i = parts.length - 2; i >= 0; i--) {
    if (layerNames.has(parts[i])) return { layer: parts[i], role };
    const unsuffixed = parts[i].replace(/_\d+$/, ''); // Keras uniquifies re-created layers: fc1_1
    if (layerNames.has(unsuffixed)) return { layer: unsuffixed, role };
  }
  return null;
}

/** IEEE half to float. */
function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/** The shards of one manifest group seen as one byte sequence. */
class ShardReader {
  private constructor(
    private readonly files: { file: string; start: number; size: number }[],
    readonly total: number,
  ) {}
  static async open(dir: string, paths: string[], jsonFile: string): Promise<ShardReader> {
    const files: { file: string; start: number; size: number }[] = [];
    let start = 0;
    for (const p of paths) {
      const file = path.resolve(dir, p);
      let st;
      try {
        st = await fs.stat(file);
      } catch {
        throw new ModelError(`${jsonFile}: weight shard ${p} not found`);
      }
      files.push({ file, start, size: st.size });
      start += st.size;
    }
    return new ShardReader(files, start);
  }
  fileList(): string[] {
    return this.files.map((f) => f.file);
  }
  /** Read `into.length` bytes starting at `offset` of the concatenation. */
  async read(offset: number, into: Uint8Array): Promise<void> {
    let done = 0;
    for (const f of this.files) {
      if (done === into.length) break;
      const at = offset + done;
      if (at >= f.start + f.size || at < f.start) continue;
      const n = Math.min(into.length - done, f.start + f.size - at);
      const h = await fs.open(f.file, 'r');
      try {
        let got = 0;
        while (got < n) {
          const { bytesRead } = await h.read(into, done + got, n - got, at - f.start + got);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        if (got !== n) throw new ModelError(`${f.file}: shard shorter than expected`);
      } finally {
        await h.close();
      }
      done += n;
    }
  }
}

/**
 * Read the spec's layer weights from a TF.js model.json. Returns the weights and the files the
 * fingerprint covers (model.json, then the shards in manifest order).
 */
export async function readTfjsLayersModel(
  jsonFile: string,
  layers: readonly Vgg16Layer[],
): Promise<{ weights: Vgg16Weights; files: string[] }> {
  let manifest: ManifestGroup[];
  try {
    const json = JSON.parse(await fs.readFile(jsonFile, 'utf8')) as { weightsManifest?: ManifestGroup[] };
    if (!Array.isArray(json.weightsManifest)) throw new Error('no weightsManifest');
    manifest = json.weightsManifest;
  } catch (e) {
    throw new ModelError(`${jsonFile}: not a TF.js model.json (${(e as Error).message})`);
  }
  const dir = path.dirname(jsonFile);
  const expected = expectedShapes(layers);
  const names = new Set(expected.keys());
  const parts = new Map<string, { kernel?: Float32Array; kernelShape?: number[]; bias?: Float32Array }>();
  const files = [jsonFile];
  for (const group of manifest) {
    const reader = await ShardReader.open(dir, group.paths ?? [], jsonFile);
    files.push(...reader.fileList());
    let offset = 0;
    for (const w of group.weights ?? []) {
      const stored = w.quantization?.dtype ?? w.dtype;
      const bytesPer = BYTES[stored];
      if (!bytesPer) throw new ModelError(`${jsonFile}: weight ${w.name}: unsupported dtype ${stored}`);
      const n = size(w.shape);
      const nbytes = n * bytesPer;
      const target = tfjsWeightTarget(w.name, names);
      if (target) {
        const exp = expected.get(target.layer)!;
        const want = target.role === 'kernel' ? exp.kernel : exp.bias;
        if (shapeStr(w.shape) !== shapeStr(want)) {
          throw new ModelError(
            `${jsonFile}: layer ${target.layer}: ${target.role} ${w.name} has shape ${shapeStr(w.shape)}, expected ${shapeStr(want)} (Keras VGG16, channels-last)`,
          );
        }
        if (w.dtype !== 'float32')
          throw new ModelError(`${jsonFile}: weight ${w.name}: dtype ${w.dtype}, expected float32`);
        if (offset + nbytes > reader.total)
          throw new ModelError(`${jsonFile}: weight ${w.name} lies past the end of its shards (${reader.total} bytes)`);
        const values = new Float32Array(n);
        if (stored === 'float32') {
          await reader.read(offset, new Uint8Array(values.buffer));
        } else {
          const raw = new Uint8Array(nbytes);
          await reader.read(offset, raw);
          const dv = new DataView(raw.buffer);
          const q = w.quantization!;
          if (stored === 'float16') for (let i = 0; i < n; i++) values[i] = halfToFloat(dv.getUint16(2 * i, true));
          else {
            const scale = q.scale ?? 1;
            const min = q.min ?? 0;
            for (let i = 0; i < n; i++)
              values[i] = (stored === 'uint8' ? raw[i] : dv.getUint16(2 * i, true)) * scale + min;
          }
        }
        const p = parts.get(target.layer) ?? {};
        if (p[target.role]) throw new ModelError(`${jsonFile}: layer ${target.layer} has two ${target.role} weights`);
        if (target.role === 'kernel') {
          p.kernel = values;
          p.kernelShape = [...w.shape];
        } else p.bias = values;
        parts.set(target.layer, p);
      }
      offset += nbytes;
    }
  }
  const weights: Vgg16Weights = new Map();
  for (const [layer, p] of parts) {
    if (!p.kernel || !p.bias)
      throw new ModelError(
        `${jsonFile}: layer ${layer} has ${p.kernel ? 'a kernel but no bias' : 'a bias but no kernel'}`,
      );
    weights.set(layer, { kernel: p.kernel, kernelShape: p.kernelShape!, bias: p.bias });
  }
  return { weights, files };
}
