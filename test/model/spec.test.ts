// The weight initialisers and the two schemes of model.init (src/model/spec.ts and each decoder's
// initialWeights): 'keras' is the default and unchanged, 'torch' draws PyTorch's layer defaults by weight
// name, and both are seeded. Pure: no TF.
import { describe, expect, it } from 'vitest';
import { ConfigSchema } from '../../src/config/schema.js';
import { DECODERS, resolveRecipe, specForConfig } from '../../src/model/decoders/index.js';
import { mergeInitialWeights, type MergeSpec } from '../../src/model/decoders/merge.js';
import { torchLinear, torchLstmBias, torchRecurrentWeights, uniform } from '../../src/model/spec.js';
import { rng } from '../../src/util/random.js';

const stats = (a: Float32Array) => {
  let s = 0;
  let s2 = 0;
  let max = 0;
  for (const v of a) {
    s += v;
    s2 += v * v;
    max = Math.max(max, Math.abs(v));
  }
  const mean = s / a.length;
  return { mean, std: Math.sqrt(s2 / a.length - mean * mean), max };
};

const merge: MergeSpec = {
  vocabSize: 500,
  featureDim: 400,
  embedDim: 64,
  units: 100,
  imageUnits: 100,
  hiddenUnits: 80,
  merge: 'add',
  dropout: 0.3,
};

describe('initialisers', () => {
  it('draw within their bounds, seeded', () => {
    const u = uniform(rng(1), 0.25, 20_000);
    expect(stats(u).max).toBeLessThanOrEqual(0.25);
    expect(stats(u).std).toBeCloseTo(0.25 / Math.sqrt(3), 2);
    expect(torchLinear(rng(1), 16, 10)).toEqual(uniform(rng(1), 0.25, 10));
    // the sum of two uniforms in +-1/sqrt(U): within +-2/sqrt(U), std sqrt(2/3)/sqrt(U)
    const b = torchLstmBias(rng(2), 100, 20_000);
    expect(stats(b).max).toBeLessThanOrEqual(0.2);
    expect(stats(b).max).toBeGreaterThan(0.15);
    expect(stats(b).std).toBeCloseTo(Math.sqrt(2 / 3) / 10, 2);
  });

  it("torchRecurrentWeights names a bias's kernel, and refuses a bias it cannot place", () => {
    const shapes = { 'a/kernel': [9, 4], 'a/bias': [4], 'x/bias': [4], 'z/kernel': [100, 4] };
    const w = torchRecurrentWeights(shapes, rng(3), 8, { 'x/bias': 'z/kernel' });
    expect(stats(w['a/bias']).max).toBeLessThanOrEqual(1 / 3);
    expect(stats(w['x/bias']).max).toBeLessThanOrEqual(0.1);
    expect(() => torchRecurrentWeights({ 'y/bias': [3] }, rng(3), 8)).toThrow(/no kernel for bias "y\/bias"/);
  });
});

describe('model.init', () => {
  it("defaults to auto, each decoder's measured recipe; a kind without the argument draws the keras way", () => {
    const c = ConfigSchema.parse({});
    expect([c.model.init, c.train.labelSmoothing, c.train.warmupSteps]).toEqual(['auto', 'auto', 'auto']);
    const auto = (type: string) => {
      const d = ConfigSchema.parse({ model: { type } });
      return resolveRecipe(d.model, d.train);
    };
    expect(Object.fromEntries(Object.keys(DECODERS).map((t) => [t, auto(t)]))).toEqual({
      merge: { init: 'torch', labelSmoothing: 0, warmupSteps: 0 },
      attention: { init: 'keras', labelSmoothing: 0.1, warmupSteps: 0 },
      transformer: { init: 'keras', labelSmoothing: 0, warmupSteps: 0 },
    });
    // a value given wins; 'auto' takes the base handed in (a resumed run's own)
    expect(resolveRecipe({ type: 'attention', init: 'torch' }, { labelSmoothing: 0, warmupSteps: 'auto' })).toEqual({
      init: 'torch',
      labelSmoothing: 0,
      warmupSteps: 0,
    });
    const base = { init: 'keras', labelSmoothing: 0.2, warmupSteps: 7 } as const;
    expect(
      resolveRecipe({ type: 'merge', init: 'auto' }, { labelSmoothing: 'auto', warmupSteps: 'auto' }, base),
    ).toEqual(base);
    expect(() => ConfigSchema.parse({ model: { init: 'xavier' } })).toThrow();
    expect(() => ConfigSchema.parse({ train: { labelSmoothing: 0.6 } })).toThrow(/0.5/);
    expect(() => ConfigSchema.parse({ train: { warmupSteps: 'soon' } })).toThrow();
    expect(mergeInitialWeights(merge, 7)).toEqual(mergeInitialWeights(merge, 7, 'keras'));
    const keras = mergeInitialWeights(merge, 7, 'keras');
    expect(stats(keras.embedding).max).toBeLessThanOrEqual(0.05);
    const forget = keras['lstm/bias'].subarray(merge.units, 2 * merge.units);
    expect([...forget].every((v) => v === 1)).toBe(true);
  });

  it("torch draws PyTorch's layer defaults for the merge decoder", () => {
    const w = mergeInitialWeights(merge, 7, 'torch');
    expect(stats(w.embedding).std).toBeCloseTo(1, 1); // nn.Embedding: N(0, 1)
    expect(stats(w['image/kernel']).max).toBeLessThanOrEqual(1 / Math.sqrt(merge.featureDim));
    expect(stats(w['image/bias']).max).toBeLessThanOrEqual(1 / Math.sqrt(merge.featureDim));
    expect(stats(w['image/bias']).max).toBeGreaterThan(0); // biases are drawn too, not zero
    expect(stats(w['output/kernel']).max).toBeLessThanOrEqual(1 / Math.sqrt(merge.hiddenUnits));
    const lstm = 1 / Math.sqrt(merge.units);
    expect(stats(w['lstm/kernel']).max).toBeLessThanOrEqual(lstm);
    expect(stats(w['lstm/recurrent']).max).toBeLessThanOrEqual(lstm);
    expect(stats(w['lstm/bias']).max).toBeLessThanOrEqual(2 * lstm);
    expect(stats(w['lstm/bias'].subarray(merge.units, 2 * merge.units)).mean).toBeLessThan(0.05); // no forget bias 1
    expect(mergeInitialWeights(merge, 7, 'torch')).toEqual(w);
    expect(mergeInitialWeights(merge, 8, 'torch').embedding).not.toEqual(w.embedding);
  });

  it('every decoder kind draws every weight with the right length under both schemes, and they differ', () => {
    const cfg = (type: string) =>
      ConfigSchema.parse({
        model: { type, embedDim: 16, units: 24, imageUnits: 24, hiddenUnits: 20, transformer: { heads: 2 } },
      }).model;
    for (const type of Object.keys(DECODERS)) {
      const { kind, spec } = specForConfig(cfg(type), 40, [6, 12]);
      const shapes = kind.weightShapes(spec);
      const keras = kind.initialWeights(spec, 3, 'keras');
      const torch = kind.initialWeights(spec, 3, 'torch');
      for (const [name, shape] of Object.entries(shapes)) {
        const n = shape.reduce((a, b) => a * b, 1);
        expect(keras[name], `${type} ${name}`).toHaveLength(n);
        expect(torch[name], `${type} ${name}`).toHaveLength(n);
        expect(torch[name].every(Number.isFinite)).toBe(true);
      }
      expect(Object.keys(torch).sort()).toEqual(Object.keys(shapes).sort());
      expect(torch).not.toEqual(keras);
    }
  });

  it("the transformer's torch scheme keeps its embedding scale and LayerNorm, and draws its biases", () => {
    const m = ConfigSchema.parse({
      model: { type: 'transformer', units: 32, transformer: { heads: 2, layers: 1 } },
    }).model;
    const { kind, spec } = specForConfig(m, 300, [6, 12]);
    const w = kind.initialWeights(spec, 5, 'torch');
    expect(stats(w.embedding).std).toBeCloseTo(1 / Math.sqrt(32), 1);
    expect([...w['layer0/self/norm/gamma']].every((v) => v === 1)).toBe(true);
    expect([...w['layer0/self/norm/beta']].every((v) => v === 0)).toBe(true);
    expect(stats(w['layer0/ffn/output/kernel']).max).toBeLessThanOrEqual(1 / Math.sqrt(128));
    expect(stats(w['layer0/self/qkv/bias']).max).toBeGreaterThan(0);
    expect(stats(w['output/bias']).max).toBeLessThanOrEqual(1 / Math.sqrt(32)); // tied: the embedding's width
  });
});
