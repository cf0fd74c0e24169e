// Pure helpers on the VGG16 spec: the Keras shapes of each weighted layer, shape formatting.
import { VGG16_LAYERS, type Vgg16Layer } from './spec.js';

/** Expected Keras shapes of one weighted layer. `top` marks the dense head (absent from _notop files). */
export interface ExpectedShapes {
  kernel: number[];
  bias: number[];
  top: boolean;
}

/** The weighted layers of a spec, in order, with their Keras shapes. */
export function expectedShapes(layers: readonly Vgg16Layer[] = VGG16_LAYERS): Map<string, ExpectedShapes> {
  const out = new Map<string, ExpectedShapes>();
  for (const l of layers) {
    if (l.kind === 'conv')
      out.set(l.name, { kernel: [3, 3, l.inChannels, l.outChannels], bias: [l.outChannels], top: false });
    else if (l.kind === 'dense') out.set(l.name, { kernel: [l.inUnits, l.outUnits], bias: [l.outUnits], top: true });
  }
  return out;
}

export const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
export const same = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((v, i) => v === b[i]);
export const shapeStr = (s: readonly number[]) => `[${s.join(', ')}]`;
