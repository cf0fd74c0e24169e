// decodeFeatures on a tiny random decoder: beam 1 is the model's greedy decode, logprobs agree with
// teacher forcing, banned tokens never come out, batching does not change results, no tensor leaks.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../../src/tf/tf.js';
import { makeBatch } from '../../src/model/decoders/batch.js';
import { MergeDecoder, mergeInitialWeights as initialWeights, type MergeSpec } from '../../src/model/decoders/merge.js';
import { AttentionDecoder, attentionInitialWeights } from '../../src/model/decoders/attention.js';
import type { DecoderState } from '../../src/model/decoders/types.js';
import { disposeState } from '../../src/model/decoders/state.js';
import { ModelError } from '../../src/errors.js';
import { greedyDecode } from '../helpers/greedy.js';
import { Vocab } from '../../src/text/vocab.js';
import { rng } from '../../src/util/random.js';
import { decodeFeatures, type DecodeSettings } from '../../src/decode/decode.js';

const TOKENS = [
  '<pad>',
  '<unk>',
  'startseq',
  'endseq',
  'a',
  'dog',
  'cat',
  'runs',
  'on',
  'the',
  'grass',
  'red',
  'ball',
  'man',
  'jumps',
  'over',
];
const vocab = new Vocab(TOKENS);
const spec: MergeSpec = {
  vocabSize: TOKENS.length,
  featureDim: 12,
  embedDim: 8,
  units: 16,
  imageUnits: 16,
  hiddenUnits: 16,
  merge: 'add',
  dropout: 0,
};
const norm = { mean: new Float32Array(spec.featureDim), std: new Float32Array(spec.featureDim).fill(1) };

/** A random decoder; `bias` adds to the output bias of chosen tokens (to steer what greedy picks). */
function model(seed: number, bias: Record<number, number> = {}): MergeDecoder {
  const w = initialWeights(spec, seed);
  // larger output weights make the choices depend on the image and the step
  w['output/kernel'] = w['output/kernel'].map((x) => x * 6);
  for (const [id, b] of Object.entries(bias)) w['output/bias'][Number(id)] += b;
  return new MergeDecoder(spec, w, norm);
}

function features(n: number, seed: number): Float32Array[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => Float32Array.from({ length: spec.featureDim }, () => r() * 6 - 3));
}

const cfg = (beam: number, extra: Partial<DecodeSettings> = {}): DecodeSettings => ({
  beam,
  maxLength: 12,
  lengthPenalty: 'none',
  alpha: 0.7,
  batchSize: 3,
  ...extra,
});

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('decodeFeatures', () => {
  const dec = model(1, { 0: -50, 1: -50, 2: -50, 3: 1.5 });
  afterAll(() => dec.dispose());

  it('with beam 1 equals the greedy decode, across batch boundaries', async () => {
    const feats = features(7, 2);
    const before = tf.memory().numTensors;
    const got = await decodeFeatures({ decoder: dec, vocab }, feats, cfg(1));
    const greedy = await greedyDecode(dec, feats, { start: vocab.start, end: vocab.end, maxLength: 12 });
    expect(tf.memory().numTensors).toBe(before);
    expect(got.map((g) => g.tokens)).toEqual(greedy);
    for (const g of got) {
      expect(g.words).toEqual(g.tokens.map((t) => TOKENS[t]));
      expect(g.caption).toBe(g.words.join(' '));
      expect(g.finished).toBe(g.tokens.length < 12);
    }
    // a mix of lengths, so images finish at different steps
    expect(new Set(got.map((g) => g.tokens.length)).size).toBeGreaterThan(1);
  });

  it('reports the log-probability teacher forcing gives the same tokens', async () => {
    const feats = features(4, 3);
    for (const beam of [1, 3]) {
      const got = await decodeFeatures({ decoder: dec, vocab }, feats, cfg(beam));
      for (let i = 0; i < feats.length; i++) {
        const g = got[i];
        const seq = [vocab.start, ...g.tokens, ...(g.finished ? [vocab.end] : [])];
        const batch = makeBatch([{ features: feats[i], tokens: seq }], spec.featureDim);
        const lp = dec.logProbsAll(batch);
        const data = (await lp.data()) as Float32Array;
        lp.dispose();
        let sum = 0;
        for (let t = 0; t < seq.length - 1; t++) sum += data[t * spec.vocabSize + seq[t + 1]];
        expect(g.logprob).toBeCloseTo(sum, 3);
      }
    }
  });

  it('never generates pad, unknown or start tokens, even when the model prefers them', async () => {
    const fond = model(4, { 0: 8, 1: 10, 2: 9 });
    try {
      const before = tf.memory().numTensors;
      for (const beam of [1, 3]) {
        const got = await decodeFeatures({ decoder: fond, vocab }, features(5, 5), cfg(beam));
        for (const g of got) for (const t of g.tokens) expect(t).toBeGreaterThan(3);
      }
      // greedy (nothing banned) picks them
      const greedy = await greedyDecode(fond, features(1, 5), { start: vocab.start, end: vocab.end, maxLength: 3 });
      expect(greedy[0].some((t) => t <= vocab.start)).toBe(true);
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      fond.dispose();
    }
  });

  it('gives the same captions whatever the batch size, beam 3, with length penalties', async () => {
    const feats = features(6, 6);
    for (const lengthPenalty of ['none', 'average', 'wu'] as const) {
      const one = await decodeFeatures({ decoder: dec, vocab }, feats, cfg(3, { batchSize: 1, lengthPenalty }));
      const all = await decodeFeatures({ decoder: dec, vocab }, feats, cfg(3, { batchSize: 32, lengthPenalty }));
      expect(all.map((g) => g.tokens)).toEqual(one.map((g) => g.tokens));
      for (let i = 0; i < feats.length; i++) expect(all[i].logprob).toBeCloseTo(one[i].logprob, 4);
    }
  });

  it('frees every tensor, also when decoding fails', async () => {
    const before = tf.memory().numTensors;
    await decodeFeatures({ decoder: dec, vocab }, features(5, 7), cfg(4, { maxLength: 20 }));
    expect(tf.memory().numTensors).toBe(before);
    await expect(decodeFeatures({ decoder: dec, vocab }, [new Float32Array(3)], cfg(2))).rejects.toThrow(/dimensions/);
    await expect(decodeFeatures({ decoder: dec, vocab }, features(2, 1), cfg(0))).rejects.toThrow(/beam/);
    expect(tf.memory().numTensors).toBe(before);
    expect(await decodeFeatures({ decoder: dec, vocab }, [], cfg(3))).toEqual([]);
  });
});

describe('decodeFeatures with the attention decoder', () => {
  const aspec = {
    vocabSize: TOKENS.length,
    positions: 6,
    channels: 4,
    embedDim: 8,
    units: 12,
    attentionDim: 10,
    dropout: 0,
    alphaReg: 1,
  };
  const w = attentionInitialWeights(aspec, 4);
  w['output/kernel'] = w['output/kernel'].map((x) => x * 6);
  for (const id of [0, 1, 2]) w['output/bias'][id] -= 50;
  w['output/bias'][3] += 1;
  // sharper attention, so rows differ from uniform
  w['attention/score/kernel'] = w['attention/score/kernel'].map((x) => x * 8);
  const att = new AttentionDecoder(aspec, w, { mean: new Float32Array(4), std: new Float32Array(4).fill(1) });
  afterAll(() => att.dispose());
  const gridFeatures = (n: number, seed: number) => {
    const r = rng(seed);
    return Array.from({ length: n }, () => Float32Array.from({ length: 24 }, () => r() * 6 - 3));
  };

  it('decodes through the interface like greedy stepping, and returns per-word attention rows of the chosen hypothesis', async () => {
    const feats = gridFeatures(5, 8);
    const before = tf.memory().numTensors;
    const got = await decodeFeatures({ decoder: att, vocab }, feats, cfg(1, { attention: true }));
    const plain = await decodeFeatures({ decoder: att, vocab }, feats, cfg(1));
    expect(tf.memory().numTensors).toBe(before);
    expect(got.map((g) => g.tokens)).toEqual(
      await greedyDecode(att, feats, { start: vocab.start, end: vocab.end, maxLength: 12 }),
    );
    expect(got.map((g) => g.tokens)).toEqual(plain.map((g) => g.tokens));
    expect(plain.every((g) => g.attention === undefined)).toBe(true);
    // the rows must be the attention of the step that produced each word: replay the caption step by step
    for (let i = 0; i < feats.length; i++) {
      const g = got[i];
      expect(g.attention).toHaveLength(g.tokens.length);
      let state: DecoderState = att.initState([feats[i]]);
      let last = vocab.start;
      for (let k = 0; k < g.tokens.length; k++) {
        const r = att.step(state, [last], { attention: true });
        const row = r.attention!.dataSync();
        expect(g.attention![k]).toHaveLength(6);
        g.attention![k].forEach((v, p) => expect(v).toBeCloseTo(row[p], 5));
        expect(g.attention![k].reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
        tf.dispose([r.logProbs, r.attention!]);
        disposeState(state);
        state = r.state;
        last = g.tokens[k];
      }
      disposeState(state);
    }
    expect(tf.memory().numTensors).toBe(before);
  });

  it('beam 3: one attention row per word; a merge decoder has none to give (ModelError, nothing leaked)', async () => {
    const feats = gridFeatures(4, 9);
    const before = tf.memory().numTensors;
    const got = await decodeFeatures({ decoder: att, vocab }, feats, cfg(3, { attention: true }));
    for (const g of got) expect(g.attention).toHaveLength(g.tokens.length);
    const merge = model(2);
    try {
      const e = await decodeFeatures({ decoder: merge, vocab }, features(2, 1), cfg(2, { attention: true })).catch(
        (x) => x,
      );
      expect(e).toBeInstanceOf(ModelError);
      expect(e.message).toMatch(/the merge decoder has no attention weights/);
    } finally {
      merge.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
  });
});
