// The soft-attention decoder on the wasm backend (with the project's kernel fixes): teacher forcing agrees
// with the one-step decoder, attention is a distribution, the init uses the mean annotation, gradients
// match finite differences, the doubly stochastic regulariser has the paper's value, memory stays flat,
// and a tiny model learns a task that needs attention.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { tf } from '../../../src/tf/tf.js';
import { initBackend } from '../../../src/tf/backend.js';
import { makeBatch, type CaptionBatch, type FeatureNorm } from '../../../src/model/decoders/batch.js';
import {
  AttentionDecoder,
  attentionInitialWeights,
  attentionKind,
  attentionWeightShapes,
  type AttentionSpec,
} from '../../../src/model/decoders/attention.js';
import type { DecoderState } from '../../../src/model/decoders/types.js';
import { disposeState, gatherState } from '../../../src/model/decoders/state.js';
import { Adam, byWeightName } from '../../../src/train/adam.js';
import { ModelError } from '../../../src/errors.js';
import { rng } from '../../../src/util/random.js';
import { checkFiniteDifferences, lossAndGrads, maxDiffs } from '../../helpers/decoder-grads.js';

beforeAll(async () => {
  await initBackend('wasm', { quiet: true });
});

afterAll(async () => {
  await tf.setBackend('cpu');
});

function tinySpec(over: Partial<AttentionSpec> = {}): AttentionSpec {
  return {
    vocabSize: 11,
    positions: 5,
    channels: 4,
    embedDim: 6,
    units: 7,
    attentionDim: 8,
    dropout: 0.3,
    alphaReg: 1,
    ...over,
  };
}

/** Random captions [start, words..., end] of 3..7 tokens with random (positions x channels) features. */
function randomItems(n: number, s: AttentionSpec, seed: number) {
  const r = rng(seed);
  return Array.from({ length: n }, () => {
    const len = 3 + Math.floor(r() * 5);
    const tokens = [2, ...Array.from({ length: len - 2 }, () => 4 + Math.floor(r() * (s.vocabSize - 4))), 3];
    const features = Float32Array.from({ length: s.positions * s.channels }, () => 2 + 3 * (r() - 0.5));
    return { features, tokens };
  });
}

function randomNorm(s: AttentionSpec, seed: number): FeatureNorm {
  const r = rng(seed);
  return {
    mean: Float32Array.from({ length: s.channels }, () => 2 + r() - 0.5),
    std: Float32Array.from({ length: s.channels }, () => 0.5 + r()),
  };
}

function take<T extends tf.Tensor>(t: T): Float32Array {
  const v = Float32Array.from(t.dataSync());
  t.dispose();
  return v;
}

describe('AttentionDecoder', () => {
  it('teacher-forced distributions and attention equal the one-step decoder over each prefix (1e-5)', () => {
    const s = tinySpec();
    const items = randomItems(4, s, 7);
    const m = AttentionDecoder.create(s, 3, randomNorm(s, 1));
    try {
      const batch = makeBatch(items, s.positions * s.channels);
      const V = s.vocabSize;
      const P = s.positions;
      const all = take(m.logProbsAll(batch)); // [B, T, V]
      const att = take(m.attentionAll(batch)); // [B, T, P]
      let state: DecoderState = m.initState(items.map((i) => i.features));
      let maxDiff = 0;
      let compared = 0;
      for (let t = 0; t < batch.steps; t++) {
        const toks = items.map((it) => (t < it.tokens.length ? it.tokens[t] : 0));
        const out = m.step(state, toks, { attention: true });
        disposeState(state);
        state = out.state;
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

  it('gives attention rows that sum to 1 and starts from the mean annotation', async () => {
    const s = tinySpec();
    const items = randomItems(3, s, 5);
    const norm = randomNorm(s, 2);
    const m = AttentionDecoder.create(s, 4, norm);
    try {
      const { positions: P, channels: C, units: U } = s;
      const state = m.initState(items.map((i) => i.features));
      const out = m.step(state, [2, 2, 2], { attention: true });
      const alpha = take(out.attention!);
      for (let b = 0; b < 3; b++) {
        let sum = 0;
        for (let i = 0; i < P; i++) {
          expect(alpha[b * P + i]).toBeGreaterThan(0);
          sum += alpha[b * P + i];
        }
        expect(sum).toBeCloseTo(1, 6);
      }
      // h0 = tanh(W mean_i(standardised a_i) + b), c0 likewise, computed here on the host
      const w = await m.readWeights();
      const h0 = Float32Array.from(state.h.dataSync());
      const c0 = Float32Array.from(state.c.dataSync());
      items.forEach((it, b) => {
        const mean = new Float64Array(C);
        for (let i = 0; i < P; i++)
          for (let k = 0; k < C; k++) mean[k] += (it.features[i * C + k] - norm.mean[k]) / norm.std[k] / P;
        for (const [which, got] of [
          ['h', h0],
          ['c', c0],
        ] as const) {
          const kernel = w[`init/${which}/kernel`];
          const bias = w[`init/${which}/bias`];
          for (let u = 0; u < U; u++) {
            let x = bias[u];
            for (let k = 0; k < C; k++) x += mean[k] * kernel[k * U + u];
            expect(got[b * U + u]).toBeCloseTo(Math.tanh(x), 5);
          }
        }
      });
      // the step without { attention } returns none (callers that do not ask cannot leak it)
      const plain = m.step(state, [2, 2, 2]);
      expect(plain.attention).toBeUndefined();
      plain.logProbs.dispose();
      disposeState(plain.state);
      out.logProbs.dispose();
      disposeState(out.state);
      disposeState(state);
    } finally {
      m.dispose();
    }
  });

  it('has gradients that match finite differences for every kind of weight', () => {
    const s = tinySpec({
      dropout: 0,
      vocabSize: 9,
      positions: 3,
      channels: 3,
      embedDim: 4,
      units: 5,
      attentionDim: 4,
      alphaReg: 1,
    });
    const items = randomItems(3, s, 11);
    const m = AttentionDecoder.create(s, 8, randomNorm(s, 3));
    try {
      const batch = makeBatch(items, s.positions * s.channels);
      const usedTokens = [...new Set(batch.inputs)];
      // three entries per weight; embedding rows of tokens the batch feeds (others have no gradient)
      const checked = checkFiniteDifferences(m, batch, {
        picks: 3,
        steps: [1e-2],
        tolerance: (a) => 3e-4 + 5e-3 * Math.abs(a),
        entry: (name, _rows, cols, r) =>
          name === 'embedding'
            ? usedTokens[Math.floor(r() * usedTokens.length)] * cols + Math.floor(r() * cols)
            : undefined,
      });
      expect(checked).toBeGreaterThan(50);
    } finally {
      m.dispose();
    }
  });

  it('adds the doubly stochastic regulariser: lambda/B * sum_i (1 - sum_t alpha_ti)^2 over real steps', () => {
    const base = tinySpec({ dropout: 0 });
    const { positions: P } = base;
    // captions of different lengths, so padded steps must be left out
    const items = randomItems(3, base, 13);
    items[0].tokens = [2, 5, 3];
    items[1].tokens = [2, 5, 6, 7, 8, 3];
    const batch = makeBatch(items, base.positions * base.channels);
    const values = attentionInitialWeights(base, 6);
    const terms = (spec: AttentionSpec, vals = values) => {
      const m = new AttentionDecoder(spec, vals, randomNorm(spec, 4));
      try {
        const t = m.lossTerms(batch, { training: false });
        const l = m.loss(batch, { training: false });
        const alphas = take(m.attentionAll(batch));
        return { ce: take(t.crossEntropy), pen: take(t.alphaPenalty)[0], loss: take(l)[0], alphas };
      } finally {
        m.dispose();
      }
    };
    // hand case: a zero score vector gives uniform attention 1/P, so the penalty is lambda/B * sum_b P (1 - L_b/P)^2
    const flat = { ...values, 'attention/score/kernel': new Float32Array(base.attentionDim) };
    const uniform = terms({ ...base, alphaReg: 1.5 }, flat);
    const lengths = items.map((it) => it.tokens.length - 1);
    const expectedUniform = (1.5 / 3) * lengths.reduce((acc, L) => acc + P * (1 - L / P) ** 2, 0);
    expect(uniform.pen).toBeCloseTo(expectedUniform, 4);
    // general case, from the model's own attention maps [B, T, P]
    const one = terms(base);
    const T = batch.steps;
    let hand = 0;
    items.forEach((it, b) => {
      for (let i = 0; i < P; i++) {
        let covered = 0;
        for (let t = 0; t < it.tokens.length - 1; t++) covered += one.alphas[(b * T + t) * P + i];
        hand += (1 - covered) ** 2;
      }
    });
    hand /= 3;
    expect(one.pen).toBeGreaterThan(0.1);
    expect(one.pen).toBeCloseTo(hand, 4);
    expect(one.loss).toBeCloseTo(one.ce[0] + one.pen, 5);
    // lambda 0 removes it; lambda scales it
    const none = terms({ ...base, alphaReg: 0 });
    expect(none.pen).toBe(0);
    expect(none.loss).toBeCloseTo(one.ce[0], 5);
    expect(terms({ ...base, alphaReg: 2.5 }).pen).toBeCloseTo(2.5 * hand, 4);
  });

  it('leaves the tensor count unchanged after loss + gradients and after initState/step/gather/dispose', () => {
    const s = tinySpec();
    const items = randomItems(5, s, 9);
    const before0 = tf.memory().numTensors;
    const m = AttentionDecoder.create(s, 1);
    try {
      const batch = makeBatch(items, s.positions * s.channels);
      const step = (seed: number) => {
        const { value, grads } = tf.variableGrads(() => m.loss(batch, { training: true, seed }), m.variables);
        expect(Object.keys(grads)).toHaveLength(m.variables.length);
        tf.dispose([value, ...Object.values(grads)]);
      };
      step(1);
      const before = tf.memory().numTensors;
      for (let i = 0; i < 3; i++) step(2 + i);
      tf.dispose([m.logProbsAll(batch), m.attentionAll(batch), m.loss(batch, { training: false })]);
      expect(tf.memory().numTensors).toBe(before);
      const st = m.initState(items.map((i) => i.features));
      const out = m.step(st, [2, 2, 2, 2, 2], { attention: true });
      const g = gatherState(out.state, [4, 0, 0]);
      expect(g.h.shape).toEqual([3, s.units]);
      expect(g.annotations.shape).toEqual([3, s.channels, s.positions]);
      const out2 = m.step(g, [5, 6, 7]);
      disposeState(st);
      disposeState(out.state);
      disposeState(g);
      disposeState(out2.state);
      tf.dispose([out.logProbs, out.attention!, out2.logProbs]);
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      m.dispose();
    }
    expect(tf.memory().numTensors).toBe(before0);
  });

  it('learns a task where the word depends on which position is marked (attention needed)', () => {
    // P positions; channels 0..P-1 say where a position is (the same in every image), channel P marks one
    // position. The mean annotation is identical for every image, so the initial state cannot tell the
    // images apart: only the attention context can.
    const P = 4;
    const s: AttentionSpec = {
      vocabSize: 4 + P,
      positions: P,
      channels: P + 1,
      embedDim: 8,
      units: 16,
      attentionDim: 16,
      dropout: 0,
      alphaReg: 0,
    };
    const C = s.channels;
    const r = rng(17);
    const makeItems = (n: number) =>
      Array.from({ length: n }, (_, k) => {
        const marked = (k + Math.floor(r() * P)) % P;
        const features = new Float32Array(P * C);
        for (let i = 0; i < P; i++) {
          features[i * C + i] = 1;
          features[i * C + P] = i === marked ? 1 : 0;
        }
        return { features, tokens: [2, 4 + marked, 3], marked };
      });
    const train = makeItems(32);
    const batch: CaptionBatch = makeBatch(train, P * C);
    const m = AttentionDecoder.create(s, 5);
    const adam = new Adam(m.weights, { learningRate: 0.02, clipNorm: 5 });
    try {
      const ce = () => {
        const t = m.lossTerms(batch, { training: false });
        const v = take(t.crossEntropy)[0];
        t.alphaPenalty.dispose();
        return v;
      };
      // same start state for every image
      const st = m.initState(train.slice(0, 2).map((i) => i.features));
      const h = take(st.h);
      disposeState(st);
      for (let u = 0; u < s.units; u++) expect(h[u]).toBeCloseTo(h[s.units + u], 6);
      const first = ce();
      for (let i = 0; i < 50; i++) {
        const { value, grads } = tf.variableGrads(() => m.loss(batch, { training: true, seed: i }), m.variables);
        adam.apply(byWeightName(m.weights, grads)).dispose();
        tf.dispose([value, ...Object.values(grads)]);
      }
      const last = ce();
      // the word is one of P equally likely ones; the end token is easy. Below log(P)/2 per caption
      // means the model reads the marked position.
      expect(last).toBeLessThan(first * 0.35);
      expect(last).toBeLessThan(Math.log(P) / 4);
      // and it does so by attending to it at the step that predicts the word
      const att = take(m.attentionAll(batch)); // [B, T, P]
      const T = batch.steps;
      const onMarked = train.reduce((acc, it, b) => acc + att[(b * T + 0) * P + it.marked], 0) / train.length;
      expect(onMarked).toBeGreaterThan(0.5);
    } finally {
      adam.dispose();
      m.dispose();
    }
  });
});

describe('AttentionDecoder across backends', () => {
  it("gives the cpu backend's loss and gradients on wasm", async () => {
    const s = tinySpec({ dropout: 0 });
    const items = randomItems(4, s, 19);
    const batch = makeBatch(items, s.positions * s.channels);
    const run = async (backend: 'cpu' | 'wasm') => {
      await initBackend(backend, { quiet: true });
      const m = AttentionDecoder.create(s, 2, randomNorm(s, 5));
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

describe('attentionKind', () => {
  it('builds a spec from grid features and rejects vector features', () => {
    const s = attentionKind.specFromConfig({ embedDim: 8, units: 16, dropout: 0.5 }, 20, [196, 512]);
    expect(s).toEqual({
      vocabSize: 20,
      positions: 196,
      channels: 512,
      embedDim: 8,
      units: 16,
      attentionDim: 16,
      dropout: 0.5,
      alphaReg: 1,
    });
    expect(attentionKind.normDim(s)).toBe(512);
    expect(() => attentionKind.specFromConfig({ embedDim: 8, units: 16, dropout: 0.5 }, 20, [4096])).toThrow(
      /grid features/,
    );
    expect(() =>
      attentionKind.specFromConfig({ embedDim: 8, units: 16, dropout: 0.5, alphaReg: -1 }, 20, [4, 3]),
    ).toThrow(ModelError);
  });

  it('initial weights have the declared shapes and are seeded', () => {
    const s = tinySpec();
    const shapes = attentionWeightShapes(s);
    const a = attentionKind.initialWeights(s, 1);
    const b = attentionKind.initialWeights(s, 1);
    const c = attentionKind.initialWeights(s, 2);
    expect(Object.keys(a)).toEqual(Object.keys(shapes));
    for (const [k, shape] of Object.entries(shapes)) expect(a[k].length, k).toBe(shape.reduce((x, y) => x * y, 1));
    expect(a['lstm/kernel']).toEqual(b['lstm/kernel']);
    expect(a['lstm/kernel']).not.toEqual(c['lstm/kernel']);
    expect([...a['lstm/bias'].subarray(s.units, 2 * s.units)].every((v) => v === 1)).toBe(true);
  });

  it('create rejects missing or mis-sized weights and a wrong normalisation, holding no tensors', () => {
    const s = tinySpec();
    const values = attentionKind.initialWeights(s, 1);
    const norm = { mean: new Float32Array(s.channels), std: new Float32Array(s.channels).fill(1) };
    const before = tf.memory().numTensors;
    const { 'gate/bias': _drop, ...missing } = values;
    expect(() => attentionKind.create(s, missing, norm)).toThrow(/"gate\/bias" is missing/);
    expect(() => attentionKind.create(s, { ...values, 'deep/bias': new Float32Array(2) }, norm)).toThrow(
      /"deep\/bias" has 2 values/,
    );
    expect(() => attentionKind.create(s, values, { mean: new Float32Array(3), std: new Float32Array(3) })).toThrow(
      /normalisation/,
    );
    expect(tf.memory().numTensors).toBe(before);
    const m = attentionKind.create(s, values, norm);
    expect(m.type).toBe('attention');
    expect(m.featureShape).toEqual([s.positions, s.channels]);
    expect(() => m.initState([new Float32Array(7)])).toThrow(/7 values/);
    const st = m.initState([new Float32Array(s.positions * s.channels)]);
    expect(() => m.step(st, [99])).toThrow(/outside the vocabulary/);
    expect(() => m.step({ h: st.h }, [2])).toThrow(/no "c"/);
    disposeState(st);
    m.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});
