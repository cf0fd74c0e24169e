// Drawing captions from a decoder for self-critical sequence training (src/train/scst.ts): k sampled
// captions per image (multinomial over the step's full softmax, drawn on the host with our seeded rng,
// so a seed gives the same captions on every backend order of events), and the greedy (argmax) caption
// that the `greedy` baseline scores. Works with any Decoder through initState/step; sequences that have
// drawn the end token are dropped from the batch (gatherState), so late steps cost only what is left.
import { tf } from '../tf/tf.js';
import { ModelError } from '../errors.js';
import { disposeState, gatherState } from '../model/decoders/state.js';
import type { Decoder, DecoderState } from '../model/decoders/types.js';
import { rng, type Rng } from '../util/random.js';

export interface DrawOptions {
  /** Start token fed first. */
  start: number;
  /** Stops a sequence once drawn (it is kept as the sequence's last token). */
  end: number;
  /** Most tokens drawn per sequence, the end token included. */
  maxLength: number;
}

/**
 * S drawn sequences, padded to T = the longest. Row s holds tokens[s*T .. s*T + lengths[s]) (the end
 * token last when ended[s]); mask is 1 exactly there. Token ids are whatever was drawn (any id of the
 * vocabulary, <pad> included), so use the mask, not the ids, to find real positions.
 */
export interface Sequences {
  count: number;
  steps: number;
  tokens: Int32Array; // [S * T]
  mask: Float32Array; // [S * T]
  lengths: Int32Array; // [S]
  ended: Uint8Array; // [S]
  /** Sampled sequences only: each sequence's summed log-probability under the model at draw time [S]. */
  logProbs?: Float64Array;
}

/** Row s's tokens without the end token (what a caption's words are made of). */
export function words(seqs: Sequences, s: number): Int32Array {
  const T = seqs.steps;
  const n = seqs.lengths[s] - (seqs.ended[s] ? 1 : 0);
  return seqs.tokens.slice(s * T, s * T + n);
}

/**
 * k sampled captions per image: row i*k + j is sample j of image i. `features`: N raw feature vectors, or
 * a [N, prod(featureShape)] tensor (left alone).
 */
export async function sampleCaptions(
  decoder: Decoder,
  features: Float32Array[] | tf.Tensor2D,
  k: number,
  opts: DrawOptions & { seed: number },
): Promise<Sequences> {
  if (!(Number.isInteger(k) && k >= 1)) throw new ModelError(`sampling: k must be a positive integer, got ${k}`);
  const r = rng(opts.seed);
  return draw(decoder, features, k, opts, async (logProbs) => {
    const n = logProbs.shape[0];
    const V = logProbs.shape[1];
    const lp = (await logProbs.data()) as Float32Array;
    const ids = new Int32Array(n);
    const picked = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      ids[i] = sampleRow(lp, i * V, V, r);
      picked[i] = lp[i * V + ids[i]];
    }
    return { ids, logProbs: picked };
  });
}

/** The greedy (argmax) caption of each image. */
export async function greedyCaptions(
  decoder: Decoder,
  features: Float32Array[] | tf.Tensor2D,
  opts: DrawOptions,
): Promise<Sequences> {
  return draw(decoder, features, 1, opts, async (logProbs) => {
    const best = tf.tidy(() => tf.argMax(logProbs, 1));
    try {
      return { ids: Int32Array.from((await best.data()) as Int32Array) };
    } finally {
      best.dispose();
    }
  });
}

/** One draw from softmax(row), the row being log-probabilities (renormalised, so rounding does no harm). */
export function sampleRow(lp: Float32Array, offset: number, V: number, r: Rng): number {
  let total = 0;
  for (let v = 0; v < V; v++) total += Math.exp(lp[offset + v]);
  let u = r() * total;
  let last = 0;
  for (let v = 0; v < V; v++) {
    const p = Math.exp(lp[offset + v]);
    if (p > 0) last = v;
    u -= p;
    if (u < 0) return v;
  }
  return last; // u landed in the rounding slack at the top: the last token with any mass
}

async function draw(
  decoder: Decoder,
  features: Float32Array[] | tf.Tensor2D,
  k: number,
  opts: DrawOptions,
  pick: (logProbs: tf.Tensor2D) => Promise<{ ids: Int32Array; logProbs?: Float64Array }>,
): Promise<Sequences> {
  const T = opts.maxLength;
  if (!(Number.isInteger(T) && T >= 1))
    throw new ModelError(`sampling: maxLength must be a positive integer, got ${T}`);
  const N = features instanceof tf.Tensor ? features.shape[0] : features.length;
  const S = N * k;
  const drawn: number[][] = Array.from({ length: S }, () => []);
  const ended = new Uint8Array(S);
  const seqLogProbs = new Float64Array(S);
  let sampled = false;
  if (S === 0)
    return {
      count: 0,
      steps: 0,
      tokens: new Int32Array(0),
      mask: new Float32Array(0),
      lengths: new Int32Array(0),
      ended,
    };
  let state: DecoderState | null = null;
  try {
    const init = decoder.initState(features);
    if (k === 1) state = init;
    else {
      try {
        state = gatherState(
          init,
          Int32Array.from({ length: S }, (_, s) => Math.floor(s / k)),
        );
      } finally {
        disposeState(init);
      }
    }
    let alive = Array.from({ length: S }, (_, s) => s); // state row -> sequence
    let feed = new Array<number>(S).fill(opts.start);
    for (let t = 0; t < T && alive.length > 0; t++) {
      const res = decoder.step(state, feed);
      disposeState(state);
      state = res.state;
      let ids: Int32Array;
      let lps: Float64Array | undefined;
      try {
        ({ ids, logProbs: lps } = await pick(res.logProbs));
        if (lps) sampled = true;
      } finally {
        res.logProbs.dispose();
        res.attention?.dispose();
      }
      const keep: number[] = [];
      const nextAlive: number[] = [];
      const nextFeed: number[] = [];
      alive.forEach((s, row) => {
        drawn[s].push(ids[row]);
        if (lps) seqLogProbs[s] += lps[row];
        if (ids[row] === opts.end) ended[s] = 1;
        else {
          keep.push(row);
          nextAlive.push(s);
          nextFeed.push(ids[row]);
        }
      });
      if (keep.length > 0 && keep.length < alive.length) {
        const smaller = gatherState(state, keep);
        disposeState(state);
        state = smaller;
      }
      alive = nextAlive;
      feed = nextFeed;
    }
  } finally {
    if (state) disposeState(state);
  }
  let steps = 0;
  for (const d of drawn) steps = Math.max(steps, d.length);
  const tokens = new Int32Array(S * steps);
  const mask = new Float32Array(S * steps);
  const lengths = new Int32Array(S);
  drawn.forEach((d, s) => {
    lengths[s] = d.length;
    for (let t = 0; t < d.length; t++) {
      tokens[s * steps + t] = d[t];
      mask[s * steps + t] = 1;
    }
  });
  return { count: S, steps, tokens, mask, lengths, ended, ...(sampled ? { logProbs: seqLogProbs } : {}) };
}
