import { describe, expect, it } from 'vitest';
import {
  beamSearch,
  penalizedScore,
  topTokens,
  type BeamResult,
  type LengthPenalty,
  type StepFn,
} from '../../src/decode/beam.js';
import { rng } from '../../src/util/random.js';

// A fake model: the next-token distribution depends on (image, whole prefix) through a seeded hash, so any
// mix-up between hypotheses, images or states changes the output. States are objects holding the prefix.
interface State {
  image: number;
  prefix: number[];
  serial: number;
}

function hashPrefix(image: number, prefix: readonly number[]): number {
  let h = (0x811c9dc5 ^ image) >>> 0;
  for (const t of prefix) h = Math.imul(h ^ (t + 7), 0x01000193) >>> 0;
  return h;
}

/** log-softmax of pseudo-random logits; `endBias` shifts the end token's logit. */
function distribution(
  image: number,
  prefix: readonly number[],
  V: number,
  endId: number,
  endBias: number,
): Float32Array {
  const r = rng(hashPrefix(image, prefix));
  const logits = Array.from({ length: V }, (_, v) => r() * 4 + (v === endId ? endBias : 0));
  const m = Math.max(...logits);
  const lse = m + Math.log(logits.reduce((a, x) => a + Math.exp(x - m), 0));
  return Float32Array.from(logits, (x) => x - lse);
}

interface FakeModel {
  init: (images: number) => State[];
  step: StepFn<State>;
  dispose: (s: State) => void;
  created: State[];
  disposed: Map<State, number>;
  calls: number[];
}

function fakeModel(
  V: number,
  endId: number,
  endBias = 0,
  opts: { failAt?: number; passThrough?: boolean } = {},
): FakeModel {
  let serial = 0;
  const created: State[] = [];
  const disposed = new Map<State, number>();
  const calls: number[] = [];
  const make = (image: number, prefix: number[]) => {
    const s = { image, prefix, serial: serial++ };
    created.push(s);
    return s;
  };
  return {
    created,
    disposed,
    calls,
    init: (n) => Array.from({ length: n }, (_, i) => make(i, [])),
    dispose: (s) => disposed.set(s, (disposed.get(s) ?? 0) + 1),
    step: async (states, last) => {
      calls.push(states.length);
      if (opts.failAt !== undefined && calls.length === opts.failAt) throw new Error('model failed');
      for (const s of states) if (disposed.has(s)) throw new Error(`step got disposed state ${s.serial}`);
      await Promise.resolve();
      const next = states.map((s, i) => {
        // the start token is not part of the prefix
        const prefix = s.prefix.length === 0 && last[i] === startId ? [] : [...s.prefix, last[i]];
        return opts.passThrough && prefix.length === s.prefix.length ? s : make(s.image, prefix);
      });
      return { states: next, logProbs: next.map((s) => distribution(s.image, s.prefix, V, endId, endBias)) };
    },
  };
}

const startId = 1;

/** Greedy reference: argmax (lowest id on ties) over allowed tokens until end or maxLength. */
function greedy(image: number, V: number, endId: number, banned: number[], maxLength: number, endBias = 0): BeamResult {
  const tokens: number[] = [];
  let logprob = 0;
  for (let t = 0; t < maxLength; t++) {
    const lp = distribution(image, tokens, V, endId, endBias);
    let best = -1;
    for (let v = 0; v < V; v++) if (!banned.includes(v) && (best < 0 || lp[v] > lp[best])) best = v;
    logprob += lp[best];
    if (best === endId) return { tokens, logprob, score: logprob, finished: true };
    tokens.push(best);
  }
  return { tokens, logprob, score: logprob, finished: false };
}

/** Exhaustive reference: every finished sequence of at most maxLength tokens (end included). */
function exhaustive(
  image: number,
  V: number,
  endId: number,
  banned: number[],
  maxLength: number,
  mode: LengthPenalty,
  alpha: number,
): BeamResult {
  let best: BeamResult | undefined;
  const visit = (prefix: number[], logprob: number) => {
    const lp = distribution(image, prefix, V, endId, 0);
    for (let v = 0; v < V; v++) {
      if (banned.includes(v)) continue;
      const l = logprob + lp[v];
      if (v === endId) {
        const score = penalizedScore(l, prefix.length + 1, mode, alpha);
        if (!best || score > best.score) best = { tokens: prefix, logprob: l, score, finished: true };
      } else if (prefix.length + 1 < maxLength) visit([...prefix, v], l);
    }
  };
  visit([], 0);
  return best!;
}

function expectSameResult(a: BeamResult, b: BeamResult) {
  expect(a.tokens).toEqual(b.tokens);
  expect(a.finished).toBe(b.finished);
  expect(a.logprob).toBeCloseTo(b.logprob, 9);
  expect(a.score).toBeCloseTo(b.score, 9);
}

function expectDisposedOnce(m: FakeModel) {
  for (const s of m.created) expect(m.disposed.get(s), `state ${s.serial}`).toBe(1);
  expect(m.disposed.size).toBe(m.created.length);
}

describe('beamSearch', () => {
  it('beam 1 is greedy decoding', async () => {
    const V = 12;
    const endId = 2;
    const banned = [0, startId];
    for (const endBias of [0, 1.5]) {
      const m = fakeModel(V, endId, endBias);
      const res = await beamSearch(m.init(20), m.step, {
        beam: 1,
        maxLength: 8,
        startId,
        endId,
        bannedIds: banned,
        disposeState: m.dispose,
        vocabSize: V,
      });
      res.forEach((r, i) => expectSameResult(r, greedy(i, V, endId, banned, 8, endBias)));
      expectDisposedOnce(m);
    }
  });

  it('a beam as wide as every sequence finds the exhaustive optimum, for each length penalty', async () => {
    // vocabulary of 4: 0 end, 1 start (banned), 2 and 3 words; at most 3 generated tokens: 3^3 = 27 sequences
    const V = 4;
    const endId = 0;
    const banned = [startId];
    const winners: Record<string, string[]> = {};
    for (const mode of ['none', 'average', 'wu'] as const) {
      const m = fakeModel(V, endId);
      const res = await beamSearch(m.init(30), m.step, {
        beam: 27,
        maxLength: 3,
        startId,
        endId,
        bannedIds: banned,
        lengthPenalty: mode,
        alpha: 1.5,
        disposeState: m.dispose,
      });
      res.forEach((r, i) => expectSameResult(r, exhaustive(i, V, endId, banned, 3, mode, 1.5)));
      winners[mode] = res.map((r) => r.tokens.join(','));
      expectDisposedOnce(m);
    }
    // the penalties do change some winners, so the comparison above means something
    expect(winners.average).not.toEqual(winners.none);
    expect(winners.wu).not.toEqual(winners.none);
  });

  it('returns the best unfinished hypothesis when nothing ends by maxLength', async () => {
    const V = 6;
    const endId = 5;
    const m = fakeModel(V, endId, -60);
    const res = await beamSearch(m.init(3), m.step, {
      beam: 3,
      maxLength: 4,
      startId,
      endId,
      bannedIds: [startId],
      disposeState: m.dispose,
    });
    for (const r of res) {
      expect(r.finished).toBe(false);
      expect(r.tokens).toHaveLength(4);
      expect(r.tokens).not.toContain(endId);
      expect(Number.isFinite(r.logprob)).toBe(true);
    }
    expectDisposedOnce(m);
    // the end token banned outright: same shape of answer
    const m2 = fakeModel(V, endId);
    const res2 = await beamSearch(m2.init(2), m2.step, {
      beam: 2,
      maxLength: 3,
      startId,
      endId,
      bannedIds: [startId, endId],
      disposeState: m2.dispose,
    });
    for (const r of res2) expect(r).toMatchObject({ finished: false });
    expect(res2[0].tokens).toHaveLength(3);
    expectDisposedOnce(m2);
  });

  it('gives an empty unfinished result when every token is banned', async () => {
    const m = fakeModel(3, 0);
    const res = await beamSearch(m.init(1), m.step, {
      beam: 2,
      maxLength: 3,
      startId,
      endId: 0,
      bannedIds: [0, 1, 2],
      disposeState: m.dispose,
    });
    expect(res).toEqual([{ tokens: [], logprob: -Infinity, score: -Infinity, finished: false }]);
    expectDisposedOnce(m);
  });

  it('batching several images gives the same results as one by one, one step call per time step', async () => {
    const V = 9;
    const endId = 2;
    const opts = {
      beam: 3,
      maxLength: 7,
      startId,
      endId,
      bannedIds: [0, startId],
      lengthPenalty: 'wu' as const,
      alpha: 0.7,
    };
    const m = fakeModel(V, endId, 0.5);
    const batched = await beamSearch(m.init(6), m.step, { ...opts, disposeState: m.dispose });
    expect(m.calls.length).toBeLessThanOrEqual(7);
    expect(m.calls[0]).toBe(6); // one hypothesis per image at the first step
    expect(Math.max(...m.calls)).toBeLessThanOrEqual(6 * 3);
    expectDisposedOnce(m);
    for (let i = 0; i < 6; i++) {
      const one = fakeModel(V, endId, 0.5);
      // an init state for image i alone
      const init = one.init(i + 1).slice(i);
      const [r] = await beamSearch(init, one.step, { ...opts, disposeState: one.dispose });
      expectSameResult(r, batched[i]);
    }
  });

  it('disposes every state exactly once, also when the step function fails', async () => {
    const m = fakeModel(7, 2, 0, { failAt: 3 });
    await expect(
      beamSearch(m.init(4), m.step, {
        beam: 3,
        maxLength: 6,
        startId,
        endId: 2,
        bannedIds: [0, 1],
        disposeState: m.dispose,
      }),
    ).rejects.toThrow('model failed');
    expectDisposedOnce(m);
  });

  it('copes with a step that returns its input state unchanged (disposed once, not twice)', async () => {
    const m = fakeModel(5, 2, 0, { passThrough: true });
    const res = await beamSearch(m.init(2), m.step, {
      beam: 2,
      maxLength: 4,
      startId,
      endId: 2,
      bannedIds: [0, 1],
      disposeState: m.dispose,
    });
    expect(res).toHaveLength(2);
    expectDisposedOnce(m);
  });

  it('rejects a step result of the wrong shape and disposes what it got', async () => {
    const m = fakeModel(5, 2);
    const bad: StepFn<State> = async (states, last) => {
      const out = await m.step(states, last);
      return { states: out.states, logProbs: out.logProbs.slice(1) };
    };
    await expect(
      beamSearch(m.init(2), bad, { beam: 2, maxLength: 4, startId, endId: 2, disposeState: m.dispose }),
    ).rejects.toThrow(/log-prob vectors/);
    expectDisposedOnce(m);
    const m2 = fakeModel(5, 2);
    await expect(
      beamSearch(m2.init(1), m2.step, {
        beam: 2,
        maxLength: 4,
        startId,
        endId: 2,
        vocabSize: 6,
        disposeState: m2.dispose,
      }),
    ).rejects.toThrow(/vocabulary size 6/);
    expectDisposedOnce(m2);
  });

  it('with attention, returns the rows of the chosen hypothesis: one per token, from the step that generated it', async () => {
    const V = 9;
    const endId = 2;
    const m = fakeModel(V, endId, -1);
    // the fake's row for a step: which image, which prefix (hash) and its length, i.e. the state consumed
    const rowOf = (s: State) => Float32Array.of(s.image, hashPrefix(s.image, s.prefix) % 1000, s.prefix.length);
    const step: StepFn<State> = async (states, last) => {
      const out = await m.step(states, last);
      return { ...out, attention: out.states.map(rowOf) };
    };
    for (const beam of [1, 3]) {
      const res = await beamSearch(m.init(4), step, {
        beam,
        maxLength: 6,
        startId,
        endId,
        bannedIds: [0, startId],
        disposeState: m.dispose,
        attention: true,
      });
      const plain = await beamSearch(m.init(4), m.step, {
        beam,
        maxLength: 6,
        startId,
        endId,
        bannedIds: [0, startId],
        disposeState: m.dispose,
      });
      res.forEach((r, image) => {
        expect(r.tokens).toEqual(plain[image].tokens);
        expect(r.attention).toHaveLength(r.tokens.length);
        r.attention!.forEach((row, k) => {
          const prefix = r.tokens.slice(0, k);
          expect(Array.from(row)).toEqual([image, hashPrefix(image, prefix) % 1000, k]);
        });
      });
      expect(res.some((r) => r.tokens.length > 1)).toBe(true);
    }
    await expect(
      beamSearch(m.init(1), m.step, {
        beam: 2,
        maxLength: 3,
        startId,
        endId,
        disposeState: m.dispose,
        attention: true,
      }),
    ).rejects.toThrow(/attention was asked for/);
    expectDisposedOnce(m);
  });

  it('validates its options', async () => {
    const m = fakeModel(5, 2);
    await expect(
      beamSearch(m.init(1), m.step, { beam: 0, maxLength: 4, startId, endId: 2, disposeState: m.dispose }),
    ).rejects.toThrow(RangeError);
    await expect(
      beamSearch(m.init(1), m.step, { beam: 1, maxLength: 0, startId, endId: 2, disposeState: m.dispose }),
    ).rejects.toThrow(RangeError);
    expectDisposedOnce(m); // the init states are owned by beamSearch even then
    expect(await beamSearch([], m.step, { beam: 3, maxLength: 4, startId, endId: 2 })).toEqual([]);
  });
});

describe('beam helpers', () => {
  it('length penalties', () => {
    expect(penalizedScore(-6, 3, 'none')).toBe(-6);
    expect(penalizedScore(-6, 3, 'average')).toBe(-2);
    expect(penalizedScore(-6, 3, 'wu', 0.7)).toBeCloseTo(-6 / Math.pow(8 / 6, 0.7), 12);
    expect(penalizedScore(-6, 1, 'wu', 0)).toBe(-6);
  });

  it('topTokens: largest first, ties to the lower id, banned / NaN / -Infinity skipped', () => {
    const lp = [-1, -0.5, -0.5, NaN, -Infinity, -3, -0.1];
    expect(topTokens(lp, 3)).toEqual([6, 1, 2]);
    expect(topTokens(lp, 3, new Set([1]))).toEqual([6, 2, 0]);
    expect(topTokens(lp, 10)).toEqual([6, 1, 2, 0, 5]);
    expect(topTokens([], 2)).toEqual([]);
  });
});
