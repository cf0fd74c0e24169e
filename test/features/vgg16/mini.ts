// A reduced "mini VGG16" for tests: Keras layer names, tiny shapes (input 4x4x3), the value formula
// scripts/make-h5-fixture.py writes into test/fixtures/vgg16/*.h5, and a plain-JS reference forward.
import * as path from 'node:path';
import type { Vgg16Layer, Vgg16Weights } from '../../../src/features/vgg16/spec.js';
import { repoRoot } from '../../helpers/cli.js';

export const MINI_LAYERS: Vgg16Layer[] = [
  { kind: 'conv', name: 'block1_conv1', inChannels: 3, outChannels: 2 },
  { kind: 'conv', name: 'block1_conv2', inChannels: 2, outChannels: 2 },
  { kind: 'pool', name: 'block1_pool' },
  { kind: 'flatten', name: 'flatten' },
  { kind: 'dense', name: 'fc1', inUnits: 8, outUnits: 3, activation: 'relu' },
  { kind: 'dense', name: 'fc2', inUnits: 3, outUnits: 3, activation: 'relu' },
  { kind: 'dense', name: 'predictions', inUnits: 3, outUnits: 2, activation: 'softmax' },
];
export const MINI_INPUT = 4;

export const fixture = (name: string) => path.join(repoRoot, 'test', 'fixtures', 'vgg16', name);

/** The fixture formula (see scripts/make-h5-fixture.py). */
export function miniWeights(opts: { includeTop?: boolean } = {}): Vgg16Weights {
  const w: Vgg16Weights = new Map();
  let L = 0;
  for (const l of MINI_LAYERS) {
    if (l.kind !== 'conv' && l.kind !== 'dense') continue;
    const idx = L++;
    if (l.kind === 'dense' && opts.includeTop === false) continue;
    const shape = l.kind === 'conv' ? [3, 3, l.inChannels, l.outChannels] : [l.inUnits, l.outUnits];
    const n = shape.reduce((a, b) => a * b, 1);
    const kernel = new Float32Array(n);
    for (let i = 0; i < n; i++) kernel[i] = (((i * 7 + idx * 13) % 23) - 11) / 10;
    const out = shape[shape.length - 1];
    const bias = new Float32Array(out);
    for (let i = 0; i < out; i++) bias[i] = (i - idx) / 4;
    w.set(l.name, { kernel, kernelShape: shape, bias });
  }
  return w;
}

/** Plain float64 forward of one channels-last image [H, W, C] through `layers` up to `output`. */
export function referenceForward(
  weights: Vgg16Weights,
  layers: Vgg16Layer[],
  input: Float32Array,
  size: number,
  output: string,
): Float64Array {
  let h = size;
  let wd = size;
  let c = 3;
  let x = Float64Array.from(input);
  for (const l of layers) {
    if (l.kind === 'conv') {
      const { kernel, bias } = weights.get(l.name)!;
      const o = l.outChannels;
      const y = new Float64Array(h * wd * o);
      for (let i = 0; i < h; i++)
        for (let j = 0; j < wd; j++)
          for (let k = 0; k < o; k++) {
            let s = bias[k];
            for (let di = 0; di < 3; di++)
              for (let dj = 0; dj < 3; dj++) {
                const yi = i + di - 1;
                const xj = j + dj - 1;
                if (yi < 0 || yi >= h || xj < 0 || xj >= wd) continue;
                for (let ci = 0; ci < c; ci++)
                  s += x[(yi * wd + xj) * c + ci] * kernel[((di * 3 + dj) * c + ci) * o + k];
              }
            y[(i * wd + j) * o + k] = Math.max(0, s);
          }
      x = y;
      c = o;
    } else if (l.kind === 'pool') {
      const h2 = Math.floor(h / 2);
      const w2 = Math.floor(wd / 2);
      const y = new Float64Array(h2 * w2 * c);
      for (let i = 0; i < h2; i++)
        for (let j = 0; j < w2; j++)
          for (let k = 0; k < c; k++) {
            let m = -Infinity;
            for (let di = 0; di < 2; di++)
              for (let dj = 0; dj < 2; dj++) m = Math.max(m, x[((2 * i + di) * wd + 2 * j + dj) * c + k]);
            y[(i * w2 + j) * c + k] = m;
          }
      x = y;
      h = h2;
      wd = w2;
    } else if (l.kind === 'dense') {
      const { kernel, bias } = weights.get(l.name)!;
      const y = new Float64Array(l.outUnits);
      for (let j = 0; j < l.outUnits; j++) {
        let s = bias[j];
        for (let i = 0; i < l.inUnits; i++) s += x[i] * kernel[i * l.outUnits + j];
        y[j] = l.activation === 'relu' ? Math.max(0, s) : s;
      }
      if (l.activation === 'softmax') {
        const m = Math.max(...y);
        let z = 0;
        for (let j = 0; j < y.length; j++) z += y[j] = Math.exp(y[j] - m);
        for (let j = 0; j < y.length; j++) y[j] /= z;
      }
      x = y;
    }
    if (l.name === output) return x;
  }
  throw new Error(`no layer ${output}`);
}
