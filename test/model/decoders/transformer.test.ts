// The Transformer decoder on the wasm backend (with the project's kernel fixes): its spec and config checks,
// weight shapes, gradients against finite differences, the causal mask, the key/value cache of one-step
// decoding against the teacher-forced pass, beam search over it, save/load through the run folder, flat
// memory, and a tiny model that learns a task only cross-attention can solve.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { tf } from '../../../src/tf/tf.js';
import { initBackend } from '../../../src/tf/backend.js';
import { ConfigSchema } from '../../../src/config/schema.js';
import { makeBatch, type CaptionBatch, type FeatureNorm } from '../../../src/model/decoders/batch.js';
import {
  TransformerDecoder,
  transformerInitialWeights,
  transformerKind,
  transformerWeightShapes,
  sinusoidalPositions,
  type TransformerSpec,
} from '../../../src/model/decoders/transformer.js';
import { specForConfig } from '../../../src/model/decoders/index.js';
import type { DecoderState } from '../../../src/model/decoders/types.js';
import { disposeState, gatherState } from '../../../src/model/decoders/state.js';
import { loadDecoder, saveDecoder } from '../../../src/model/runfolder.js';
import { decodeFeatures } from '../../../src/decode/decode.js';
import { Adam, byWeightName } from '../../../src/train/adam.js';
import { Vocab } from '../../../src/text/vocab.js';
import { ModelError } from '../../../src/errors.js';
import { rng } from '../../../src/util/random.js';
import { checkFiniteDifferences, lossAndGrads, maxDiffs } from '../../helpers/decoder-grads.js';

let work: string;
beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'captioner-transformer-'));
});

afterAll(async () => {
  await tf.setBackend('cpu');
  await fs.rm(work, { recursive: true, force: true });
});

function tinySpec(over: Partial<TransformerSpec> = {}): TransformerSpec {
  return {
    vocabSize: 11,
    positions: 5,
    channels: 4,
    layers: 2,
    heads: 2,
    modelDim: 8,
    ffnDim: 12,
    dropout: 0.2,
    positionEncoding: 'sinusoidal',
    imagePositions: 'learned',
    tieEmbeddings: true,
    maxLength: 200,
    ...over,
  };
}

/** Random captions [start, words..., end] of 3..7 tokens with random (positions x channels) features. */
function randomItems(n: number, s: TransformerSpec, seed: number) {
  const r = rng(seed);
  return Array.from({ length: n }, () => {
    const len = 3 + Math.floor(r() * 5);
    const tokens = [2, ...Array.from({ length: len - 2 }, () => 4 + Math.floor(r() * (s.vocabSize - 4))), 3];
    const features = Float32Array.from({ length: s.positions * s.channels }, () => 2 + 3 * (r() - 0.5));
    return { features, tokens };
  });
}

function randomNorm(s: TransformerSpec, seed: number): FeatureNorm {
  const r = rng(seed);
  return {
    mean: Float32Array.from({ length: s.channels }, () => 2 + r() - 0.5),
    std: Float32Array.from({ length: s.channels }, () => 0.5 + r()),
  };
}

/** Initial weights with the LayerNorm gains and shifts and the biases randomised too, so their gradients are not special cases. */
function busyWeights(s: TransformerSpec, seed: number): Record<string, Float32Array> {
  const w = transformerInitialWeights(s, seed);
  const r = rng(seed + 100);
  for (const [k, v] of Object.entries(w)) {
    if (k.endsWith('/gamma')) w[k] = v.map(() => 0.5 + r());
    else if (k.endsWith('/beta') || k.endsWith('bias')) w[k] = v.map(() => 0.4 * (r() - 0.5));
  }
  return w;
}

function take<T extends tf.Tensor>(t: T): Float32Array {
  const v = Float32Array.from(t.dataSync());
  t.dispose();
  return v;
}

describe('transformerKind: spec and weights', () => {
  const cfg = (over: Record<string, unknown> = {}) => ({
    units: 16,
    dropout: 0.5,
    layers: 2,
    heads: 4,
    positionEncoding: 'sinusoidal' as const,
    imagePositions: 'learned' as const,
    tieEmbeddings: true,
    ...over,
  });

  it('builds a spec from grid or token features, model.units as the default model size', () => {
    const s = transformerKind.specFromConfig(cfg(), 20, [49, 512]);
    expect(s).toEqual({
      vocabSize: 20,
      positions: 49,
      channels: 512,
      layers: 2,
      heads: 4,
      modelDim: 16,
      ffnDim: 64,
      dropout: 0.5,
      positionEncoding: 'sinusoidal',
      imagePositions: 'learned',
      tieEmbeddings: true,
      maxLength: 200,
    });
    expect(transformerKind.normDim(s)).toBe(512);
    expect(transformerKind.specFromConfig(cfg({ modelDim: 24, ffnDim: 30, heads: 3 }), 20, [50, 768])).toMatchObject({
      positions: 50,
      channels: 768,
      modelDim: 24,
      ffnDim: 30,
      heads: 3,
    });
  });

  it('refuses vector features, heads that do not divide the model size, and damaged saved specs', () => {
    expect(() => transformerKind.specFromConfig(cfg(), 20, [4096])).toThrow(/needs grid or token features/);
    expect(() => transformerKind.specFromConfig(cfg({ heads: 3 }), 20, [4, 3])).toThrow(
      /model size \(16\) must be a multiple of its heads \(3\)/,
    );
    const good = tinySpec();
    expect(() => transformerKind.validateSpec(good)).not.toThrow();
    for (const bad of [
      { layers: 0 },
      { heads: 1.5 },
      { modelDim: -8 },
      { ffnDim: undefined },
      { vocabSize: 3 },
      { dropout: 1 },
      { positionEncoding: 'rotary' },
      { imagePositions: 'sinusoidal' },
      { tieEmbeddings: 'yes' },
      { maxLength: 0 },
    ]) {
      expect(
        () => transformerKind.validateSpec({ ...good, ...bad } as unknown as TransformerSpec),
        JSON.stringify(bad),
      ).toThrow(ModelError);
    }
    expect(() => transformerKind.validateSpec(null as unknown as TransformerSpec)).toThrow(/spec is missing/);
  });

  it('the config schema gives model.transformer its defaults and checks heads against the model size', () => {
    const m = ConfigSchema.parse({ model: { type: 'transformer' } }).model;
    expect(m.transformer).toEqual({
      layers: 3,
      heads: 8,
      dropout: 0.1,
      positionEncoding: 'sinusoidal',
      imagePositions: 'learned',
      tieEmbeddings: true,
    });
    expect(specForConfig(m, 30, [49, 512]).spec).toMatchObject({
      modelDim: 256,
      ffnDim: 1024,
      heads: 8,
      layers: 3,
      dropout: 0.1,
    });
    const bad = ConfigSchema.safeParse({ model: { type: 'transformer', units: 100, transformer: { heads: 8 } } });
    expect(bad.success).toBe(false);
    expect(bad.error!.issues[0].path).toEqual(['model', 'transformer', 'heads']);
    expect(bad.error!.issues[0].message).toMatch(/model size \(model.units 100\) must be a multiple of heads \(8\)/);
    // other decoder types do not care about the transformer's heads
    expect(ConfigSchema.safeParse({ model: { type: 'merge', units: 100, imageUnits: 100 } }).success).toBe(true);
    expect(
      ConfigSchema.safeParse({ model: { type: 'transformer', transformer: { positionEncoding: 'rotary' } } }).success,
    ).toBe(false);
    expect(ConfigSchema.safeParse({ model: { type: 'transformer', transformer: { layers: 49 } } }).success).toBe(false);
  });

  it('has the declared weight shapes: optional position tables and output kernel, per-layer blocks', () => {
    const s = tinySpec();
    const shapes = transformerWeightShapes(s);
    const D = s.modelDim;
    expect(shapes['embedding']).toEqual([11, D]);
    expect(shapes['image/kernel']).toEqual([4, D]);
    expect(shapes['image/position']).toEqual([5, D]);
    expect(shapes['layer1/self/qkv/kernel']).toEqual([D, 3 * D]);
    expect(shapes['layer1/cross/kv/kernel']).toEqual([D, 2 * D]);
    expect(shapes['layer0/ffn/hidden/kernel']).toEqual([D, 12]);
    expect(shapes['layer0/ffn/output/kernel']).toEqual([12, D]);
    expect(shapes['output/bias']).toEqual([11]);
    expect(shapes).not.toHaveProperty('position');
    expect(shapes).not.toHaveProperty('output/kernel');
    expect(shapes).not.toHaveProperty('layer2/self/qkv/kernel');
    expect(Object.keys(shapes).filter((k) => k.startsWith('layer0/'))).toHaveLength(20);
    const other = transformerWeightShapes(
      tinySpec({ positionEncoding: 'learned', imagePositions: 'none', tieEmbeddings: false }),
    );
    expect(other['position']).toEqual([200, D]);
    expect(other['output/kernel']).toEqual([D, 11]);
    expect(other).not.toHaveProperty('image/position');
  });

  it('initial weights have the declared shapes, are seeded, and start LayerNorm at identity', () => {
    const s = tinySpec({ positionEncoding: 'learned', tieEmbeddings: false });
    const shapes = transformerWeightShapes(s);
    const a = transformerKind.initialWeights(s, 1);
    const b = transformerKind.initialWeights(s, 1);
    const c = transformerKind.initialWeights(s, 2);
    expect(Object.keys(a)).toEqual(Object.keys(shapes));
    for (const [k, shape] of Object.entries(shapes)) expect(a[k].length, k).toBe(shape.reduce((x, y) => x * y, 1));
    expect(a['layer0/self/qkv/kernel']).toEqual(b['layer0/self/qkv/kernel']);
    expect(a['layer0/self/qkv/kernel']).not.toEqual(c['layer0/self/qkv/kernel']);
    expect([...a['layer1/ffn/norm/gamma']].every((v) => v === 1)).toBe(true);
    expect([...a['layer1/ffn/norm/beta']].every((v) => v === 0)).toBe(true);
    expect([...a['layer1/cross/kv/bias']].every((v) => v === 0)).toBe(true);
    // fused kernels are drawn as their [D, D] parts: glorot limit sqrt(6 / 2D)
    const lim = Math.sqrt(6 / (2 * s.modelDim));
    expect(Math.max(...a['layer0/self/qkv/kernel'].map(Math.abs))).toBeLessThanOrEqual(lim);
    expect(Math.max(...a['layer0/self/qkv/kernel'].map(Math.abs))).toBeGreaterThan(0.8 * lim);
    // the embedding's variance is about 1 / D
    const e = a['embedding'];
    const variance = e.reduce((acc, v) => acc + v * v, 0) / e.length;
    expect(variance * s.modelDim).toBeGreaterThan(0.5);
    expect(variance * s.modelDim).toBeLessThan(1.6);
  });

  it('sinusoidal positions follow sin / cos of t / 10000^(2i/D)', () => {
    const pe = sinusoidalPositions(3, 6);
    expect(pe[0]).toBe(0);
    expect(pe[1]).toBe(1);
    expect(pe[6 + 0]).toBeCloseTo(Math.sin(1), 6);
    expect(pe[6 + 1]).toBeCloseTo(Math.cos(1), 6);
    expect(pe[2 * 6 + 2]).toBeCloseTo(Math.sin(2 / Math.pow(10000, 2 / 6)), 6);
    expect(pe[2 * 6 + 5]).toBeCloseTo(Math.cos(2 / Math.pow(10000, 4 / 6)), 6);
    expect(sinusoidalPositions(2, 5)).toHaveLength(10); // odd D: the last column is a sine
  });

  it('create rejects missing or mis-sized weights and a wrong normalisation, holding no tensors', () => {
    const s = tinySpec();
    const values = transformerKind.initialWeights(s, 1);
    const norm = { mean: new Float32Array(s.channels), std: new Float32Array(s.channels).fill(1) };
    const before = tf.memory().numTensors;
    const { 'layer1/cross/kv/bias': _drop, ...missing } = values;
    expect(() => transformerKind.create(s, missing, norm)).toThrow(/"layer1\/cross\/kv\/bias" is missing/);
    expect(() => transformerKind.create(s, { ...values, 'final/norm/beta': new Float32Array(2) }, norm)).toThrow(
      /"final\/norm\/beta" has 2 values/,
    );
    expect(() => transformerKind.create(s, values, { mean: new Float32Array(3), std: new Float32Array(3) })).toThrow(
      /normalisation/,
    );
    expect(tf.memory().numTensors).toBe(before);
    const m = transformerKind.create(s, values, norm);
    expect(m.type).toBe('transformer');
    expect(m.featureShape).toEqual([s.positions, s.channels]);
    expect(() => m.initState([new Float32Array(7)])).toThrow(/7 values/);
    const st = m.initState([new Float32Array(s.positions * s.channels)]);
    expect(() => m.step(st, [99])).toThrow(/outside the vocabulary/);
    expect(() => m.step(st, [2, 2])).toThrow(/2 tokens for 1 sequences/);
    expect(() => m.step({ 'memory/0/k': st['memory/0/k'] }, [2])).toThrow(/no "memory\/0\/v"/);
    expect(() => m.step({ ...st, 'self/1/k': st['memory/0/k'] }, [2])).toThrow(/disagree/);
    disposeState(st);
    m.dispose();
    m.dispose(); // idempotent
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('TransformerDecoder', () => {
  for (const variant of [
    { name: 'tied, sinusoidal', over: {} },
    {
      name: 'untied, learned positions, no image positions',
      over: { tieEmbeddings: false, positionEncoding: 'learned', imagePositions: 'none' } as Partial<TransformerSpec>,
    },
  ]) {
    it(`caches keys and values: step-by-step log-probs and attention equal the teacher-forced pass (1e-5; ${variant.name})`, () => {
      const s = tinySpec(variant.over);
      const items = randomItems(4, s, 7);
      const m = new TransformerDecoder(s, busyWeights(s, 3), randomNorm(s, 1));
      try {
        const batch = makeBatch(items, s.positions * s.channels);
        const { vocabSize: V, positions: P, heads: H, modelDim: D } = s;
        const all = take(m.logProbsAll(batch)); // [B, T, V]
        const att = take(m.attentionAll(batch)); // [B, T, P]
        let state: DecoderState = m.initState(items.map((i) => i.features));
        expect(state['memory/1/k'].shape).toEqual([4, H, P, D / H]);
        expect(state).not.toHaveProperty('self/0/k');
        let maxDiff = 0;
        let compared = 0;
        for (let t = 0; t < batch.steps; t++) {
          const toks = items.map((it) => (t < it.tokens.length ? it.tokens[t] : 0));
          const out = m.step(state, toks, { attention: true });
          disposeState(state);
          state = out.state;
          // the cache holds every word so far, in every layer
          for (let l = 0; l < s.layers; l++)
            for (const part of ['k', 'v']) expect(state[`self/${l}/${part}`].shape).toEqual([4, H, t + 1, D / H]);
          const lp = take(out.logProbs);
          const alpha = take(out.attention!);
          items.forEach((it, b) => {
            if (t >= it.tokens.length - 1) return; // past this caption's end
            for (let v = 0; v < V; v++)
              maxDiff = Math.max(maxDiff, Math.abs(lp[b * V + v] - all[(b * batch.steps + t) * V + v]));
            for (let i = 0; i < P; i++)
              maxDiff = Math.max(maxDiff, Math.abs(alpha[b * P + i] - att[(b * batch.steps + t) * P + i]));
            compared++;
          });
        }
        disposeState(state);
        expect(compared).toBe(items.reduce((n, it) => n + it.tokens.length - 1, 0));
        expect(maxDiff).toBeLessThan(1e-5);
      } finally {
        m.dispose();
      }
    });
  }

  it('is causal: changing a later input token changes no earlier log-probability', () => {
    const s = tinySpec({ dropout: 0 });
    const items = randomItems(3, s, 23).map((it) => ({ ...it, tokens: [2, 4, 5, 6, 7, 8, 3] }));
    const m = new TransformerDecoder(s, busyWeights(s, 4), randomNorm(s, 2));
    try {
      const base = makeBatch(items, s.positions * s.channels);
      const T = base.steps;
      const V = s.vocabSize;
      const a = take(m.logProbsAll(base));
      for (const at of [1, 3, T - 1]) {
        const inputs = base.inputs.slice();
        for (let b = 0; b < 3; b++) inputs[b * T + at] = inputs[b * T + at] === 9 ? 10 : 9;
        const b2: CaptionBatch = { ...base, inputs };
        const c = take(m.logProbsAll(b2));
        let before = 0;
        let after = 0;
        for (let b = 0; b < 3; b++) {
          for (let t = 0; t < T; t++) {
            for (let v = 0; v < V; v++) {
              const d = Math.abs(a[(b * T + t) * V + v] - c[(b * T + t) * V + v]);
              if (t < at) before = Math.max(before, d);
              else after = Math.max(after, d);
            }
          }
        }
        expect(before, `positions before ${at}`).toBeLessThan(1e-6);
        expect(after, `positions from ${at}`).toBeGreaterThan(1e-3);
      }
    } finally {
      m.dispose();
    }
  });

  for (const variant of [
    { name: 'tied, sinusoidal, image positions', over: {} },
    {
      name: 'untied, learned positions',
      over: { tieEmbeddings: false, positionEncoding: 'learned' } as Partial<TransformerSpec>,
    },
  ]) {
    it(`has gradients that match finite differences for every kind of weight (${variant.name})`, () => {
      const s = tinySpec({
        dropout: 0,
        vocabSize: 9,
        positions: 3,
        channels: 3,
        modelDim: 4,
        heads: 2,
        ffnDim: 6,
        layers: 2,
        ...variant.over,
      });
      const items = randomItems(3, s, 11);
      const m = new TransformerDecoder(s, busyWeights(s, 8), randomNorm(s, 3));
      try {
        const batch = makeBatch(items, s.positions * s.channels);
        const usedTokens = [...new Set([...batch.inputs, ...batch.targets])];
        // two entries per weight; rows of tokens and positions the batch uses (others have no gradient); three
        // step sizes: a ReLU kink within one step spoils the larger ones, float32 rounding the smallest
        const checked = checkFiniteDifferences(m, batch, {
          picks: 2,
          steps: [1e-2, 3e-3, 1e-3],
          tolerance: (a) => 3e-4 + 5e-3 * Math.abs(a),
          entry: (name, rows, cols, r) => {
            if (name === 'embedding')
              return usedTokens[Math.floor(r() * usedTokens.length)] * cols + Math.floor(r() * cols);
            if (name === 'position')
              return Math.floor(r() * Math.min(rows, batch.steps)) * cols + Math.floor(r() * cols);
            return undefined;
          },
        });
        expect(checked).toBeGreaterThan(100);
      } finally {
        m.dispose();
      }
    });
  }

  it('applies dropout only when training, and differently per seed', () => {
    const s = tinySpec({ dropout: 0.3 });
    const items = randomItems(4, s, 5);
    const m = TransformerDecoder.create(s, 2, randomNorm(s, 1));
    try {
      const batch = makeBatch(items, s.positions * s.channels);
      const at = (training: boolean, seed: number) => take(m.loss(batch, { training, seed }))[0];
      expect(at(false, 1)).toBe(at(false, 2));
      expect(at(true, 1)).toBe(at(true, 1));
      expect(at(true, 1)).not.toBe(at(true, 2));
      expect(at(true, 1)).not.toBe(at(false, 1));
    } finally {
      m.dispose();
    }
  });

  it('leaves the tensor count unchanged after a training step and after initState/step/gather/dispose and beam search', async () => {
    const s = tinySpec();
    const items = randomItems(5, s, 9);
    const before0 = tf.memory().numTensors;
    const m = TransformerDecoder.create(s, 1);
    const adam = new Adam(m.weights, { learningRate: 1e-3, clipNorm: 5 });
    try {
      const batch = makeBatch(items, s.positions * s.channels);
      const step = (seed: number) => {
        const { value, grads } = tf.variableGrads(() => m.loss(batch, { training: true, seed }), m.variables);
        expect(Object.keys(grads)).toHaveLength(m.variables.length);
        adam.apply(byWeightName(m.weights, grads)).dispose();
        tf.dispose([value, ...Object.values(grads)]);
      };
      step(1); // Adam makes its moments on the first step
      const before = tf.memory().numTensors;
      for (let i = 0; i < 3; i++) step(2 + i);
      tf.dispose([
        m.logProbsAll(batch),
        m.attentionAll(batch),
        m.loss(batch, { training: false }),
        ...Object.values(m.lossTerms(batch, { training: false })),
      ]);
      expect(tf.memory().numTensors).toBe(before);
      const st = m.initState(items.map((i) => i.features));
      const out = m.step(st, [2, 2, 2, 2, 2], { attention: true });
      const g = gatherState(out.state, [4, 0, 0]);
      expect(g['self/0/k'].shape).toEqual([3, s.heads, 1, s.modelDim / s.heads]);
      const out2 = m.step(g, [5, 6, 7]);
      expect(out2.attention).toBeUndefined();
      disposeState(st);
      disposeState(out.state);
      disposeState(g);
      disposeState(out2.state);
      tf.dispose([out.logProbs, out.attention!, out2.logProbs]);
      expect(tf.memory().numTensors).toBe(before);
      const vocab = new Vocab([
        '<pad>',
        '<unk>',
        '<start>',
        '<end>',
        ...Array.from({ length: s.vocabSize - 4 }, (_, i) => `w${i}`),
      ]);
      await decodeFeatures(
        { decoder: m, vocab },
        items.map((i) => i.features),
        { beam: 3, maxLength: 6, lengthPenalty: 'none', alpha: 0.7, batchSize: 2, attention: true },
      );
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      adam.dispose();
      m.dispose();
    }
    expect(tf.memory().numTensors).toBe(before0);
  });

  it("runs beam search: each caption's log-probability is the teacher-forced one, attention rows per word sum to 1", async () => {
    const s = tinySpec({ dropout: 0, vocabSize: 12 });
    const vocab = new Vocab(['<pad>', '<unk>', '<start>', '<end>', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']);
    const w = busyWeights(s, 6);
    w['output/bias'][3] -= 2; // the end token less likely than it starts (the word just read is the likeliest next one)
    const m = new TransformerDecoder(s, w, randomNorm(s, 6));
    try {
      const feats = randomItems(5, s, 31).map((i) => i.features);
      const greedy = await decodeFeatures({ decoder: m, vocab }, feats, {
        beam: 1,
        maxLength: 8,
        lengthPenalty: 'none',
        alpha: 0.7,
        batchSize: 5,
      });
      const beam = await decodeFeatures({ decoder: m, vocab }, feats, {
        beam: 4,
        maxLength: 8,
        lengthPenalty: 'none',
        alpha: 0.7,
        batchSize: 2,
        attention: true,
      });
      expect(beam).toHaveLength(5);
      // greedy runs to maxLength here (the cache grows through all 8 steps); the wider beam finds better, shorter captions
      expect(greedy.some((r) => r.tokens.length === 8)).toBe(true);
      for (let i = 0; i < 5; i++) {
        expect(beam[i].logprob).toBeGreaterThanOrEqual(greedy[i].logprob - 1e-4);
        expect(beam[i].attention).toHaveLength(beam[i].tokens.length);
        for (const row of beam[i].attention!) {
          expect(row).toHaveLength(s.positions);
          expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
        }
      }
      // each caption's log-probability is the sum of its tokens' (and the end token's) under teacher forcing
      for (const [i, r] of [...beam.entries(), ...greedy.entries()]) {
        const tokens = [vocab.start, ...r.tokens, ...(r.finished ? [vocab.end] : [])];
        const batch = makeBatch([{ features: feats[i], tokens }], s.positions * s.channels);
        const lp = take(m.logProbsAll(batch));
        let sum = 0;
        for (let t = 0; t < tokens.length - 1; t++) sum += lp[t * s.vocabSize + tokens[t + 1]];
        expect(r.logprob).toBeCloseTo(sum, 4);
      }
    } finally {
      m.dispose();
    }
  });

  it('refuses a step past the positions it knows, and captions longer than them', () => {
    const s = tinySpec({ maxLength: 2, positionEncoding: 'learned' });
    const m = TransformerDecoder.create(s, 1);
    try {
      let st = m.initState([new Float32Array(s.positions * s.channels)]);
      for (let i = 0; i < 2; i++) {
        const r = m.step(st, [2]);
        disposeState(st);
        r.logProbs.dispose();
        st = r.state;
      }
      expect(() => m.step(st, [4])).toThrow(
        /knows 2 token positions; position 3 is past them \(lower decode.maxLength\)/,
      );
      disposeState(st);
      const long = makeBatch(
        [{ features: new Float32Array(s.positions * s.channels), tokens: [2, 4, 5, 3] }],
        s.positions * s.channels,
      );
      expect(() => m.loss(long, { training: false })).toThrow(/captions of 3 steps; the transformer knows 2/);
    } finally {
      m.dispose();
    }
  });

  it('saves and loads through the run folder with the same spec, weights and outputs (untied, learned positions)', async () => {
    const s = tinySpec({ tieEmbeddings: false, positionEncoding: 'learned', imagePositions: 'none' });
    const m = new TransformerDecoder(s, busyWeights(s, 12), randomNorm(s, 12));
    const dir = path.join(work, 'roundtrip', 'best');
    try {
      await saveDecoder(dir, m);
      const meta = JSON.parse(await fs.readFile(path.join(dir, 'weights.json'), 'utf8')).meta;
      expect(meta.type).toBe('transformer');
      expect(meta.spec).toEqual(s);
      const back = await loadDecoder(dir);
      try {
        expect(back.type).toBe('transformer');
        expect(back.spec).toEqual(s);
        expect(Array.from(back.norm.std)).toEqual(Array.from(m.norm.std));
        const [wa, wb] = [await m.readWeights(), await back.readWeights()];
        expect(Object.keys(wb)).toEqual(Object.keys(wa));
        for (const k of Object.keys(wa)) expect(Array.from(wb[k]), k).toEqual(Array.from(wa[k]));
        const batch = makeBatch(randomItems(3, s, 2), s.positions * s.channels);
        expect(Array.from(take(back.logProbsAll(batch)))).toEqual(Array.from(take(m.logProbsAll(batch))));
      } finally {
        back.dispose();
      }
      // a damaged spec is a ModelError naming the file
      const index = JSON.parse(await fs.readFile(path.join(dir, 'weights.json'), 'utf8'));
      index.meta.spec.heads = 3;
      await fs.writeFile(path.join(dir, 'weights.json'), JSON.stringify(index));
      await expect(loadDecoder(dir)).rejects.toThrow(
        /weights\.json: model: the transformer's model size \(8\) must be a multiple of its heads \(3\)/,
      );
    } finally {
      m.dispose();
    }
  });

  it('learns a task where the word depends on which image position is marked (cross-attention needed)', () => {
    // P positions; channels 0..P-1 say where a position is (the same in every image), channel P marks one
    // position. Without image position embeddings, only attending to the marked position and reading its
    // location channels tells the word.
    const P = 4;
    const s: TransformerSpec = {
      ...tinySpec(),
      vocabSize: 4 + P,
      positions: P,
      channels: P + 1,
      layers: 1,
      heads: 2,
      modelDim: 16,
      ffnDim: 32,
      dropout: 0,
      imagePositions: 'none',
    };
    const C = s.channels;
    const r = rng(17);
    const train = Array.from({ length: 32 }, (_, k) => {
      const marked = (k + Math.floor(r() * P)) % P;
      const features = new Float32Array(P * C);
      for (let i = 0; i < P; i++) {
        features[i * C + i] = 1;
        features[i * C + P] = i === marked ? 1 : 0;
      }
      return { features, tokens: [2, 4 + marked, 3], marked };
    });
    const batch = makeBatch(train, P * C);
    const m = TransformerDecoder.create(s, 5);
    const adam = new Adam(m.weights, { learningRate: 0.01, clipNorm: 5 });
    try {
      const ce = () => take(m.loss(batch, { training: false }))[0];
      const first = ce();
      for (let i = 0; i < 60; i++) {
        const { value, grads } = tf.variableGrads(() => m.loss(batch, { training: true, seed: i }), m.variables);
        adam.apply(byWeightName(m.weights, grads)).dispose();
        tf.dispose([value, ...Object.values(grads)]);
      }
      const last = ce();
      expect(last).toBeLessThan(first * 0.35);
      expect(last).toBeLessThan(Math.log(P) / 4);
      const att = take(m.attentionAll(batch)); // [B, T, P]
      const T = batch.steps;
      // and where its last layer looks when it predicts the word depends on the mark: towards it, or (as the
      // model may equally well learn) away from it, to read the other positions' locations
      const onMarked = train.reduce((acc, it, b) => acc + att[(b * T + 0) * P + it.marked], 0) / train.length;
      expect(Math.abs(onMarked - 1 / P)).toBeGreaterThan(0.15);
    } finally {
      adam.dispose();
      m.dispose();
    }
  });
});

describe('TransformerDecoder across backends', () => {
  it("gives the cpu backend's loss and gradients on wasm", async () => {
    const s = tinySpec({ dropout: 0 });
    const items = randomItems(4, s, 19);
    const batch = makeBatch(items, s.positions * s.channels);
    const run = async (backend: 'cpu' | 'wasm') => {
      await initBackend(backend, { quiet: true });
      const m = new TransformerDecoder(s, busyWeights(s, 2), randomNorm(s, 5));
      try {
        return lossAndGrads(m, batch);
      } finally {
        m.dispose();
      }
    };
    const c = await run('cpu');
    const w = await run('wasm');
    expect(w.loss).toBeCloseTo(c.loss, 5);
    for (const [k, d] of Object.entries(maxDiffs(c.grads, w.grads))) expect(d, k).toBeLessThan(1e-5);
  });
});
