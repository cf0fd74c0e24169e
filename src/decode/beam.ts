// Beam search (pure, no TF): the one decoder that eval, caption and serve use. The model is reached only
// through a batched step function; greedy decoding is beam 1.
//
// How it works. Every image starts with one hypothesis: no tokens, log-probability 0, its initial state and
// last token = startId. At each time step, all live hypotheses of all unfinished images go through ONE call
// `step(states, lastTokens)`, which returns, for each entry i, the log-probabilities of the next token
// (logProbs[i], length = vocabulary size, log-softmax) and the model state after consuming lastTokens[i]
// (states[i]). Per image, the candidates (hypothesis + token, banned tokens excluded) are ranked by total
// log-probability (ties: earlier hypothesis, then lower token id); walking down that ranking, an end token
// ranked within the first `beam` candidates finishes its hypothesis, and the first `beam` other candidates
// become the next live hypotheses (so the beam stays full). An image is done when `beam` hypotheses have
// finished, when nothing is left alive, or after `maxLength` steps. Its result is the finished hypothesis
// with the best score (length penalty applied); when none finished, the best unfinished one (finished=false).
// With beam 1 this is exactly greedy decoding: the argmax token at each step, stopping at the end token.
//
// Length. maxLength counts generated tokens including the end token: a finished caption has at most
// maxLength - 1 words; an unfinished one has exactly maxLength. Returned tokens exclude start and end.
// The length used by the penalties is the number of generated tokens, the end token included.
//
// States are opaque to this module. A hypothesis refers to the state returned for its parent, so siblings
// share one state object; the step receives that object once per hypothesis (possibly the same object several
// times) and must return a new state per entry (it may return an input object unchanged, e.g. a stateless
// model). Ownership: beamSearch owns the `init` states and every state a step returns. It counts references by
// object identity and calls `disposeState(s)` exactly once per distinct state object, as soon as no live
// hypothesis refers to it (pruned hypotheses, consumed initial states), and disposes whatever is left when it
// returns or throws (invalid options included: the init states are always disposed). The step must not
// dispose the states it is given. For TF.js: a state may hold its own tensors, or be a row handle into a
// batch state [N, units] with a count of live rows kept by the caller (what src/decode/decode.ts does).

export type LengthPenalty = 'none' | 'average' | 'wu';

export interface StepResult<S> {
  /** One log-probability vector per input entry (length = vocabulary size). Views into one buffer are fine. */
  logProbs: Float32Array[];
  /** One state per input entry: the state after consuming lastTokens[i]. */
  states: S[];
  /** With BeamOptions.attention: one attention row per input entry (the weights behind logProbs[i]). */
  attention?: Float32Array[];
}

/** Batched over live hypotheses: states[i] and lastTokens[i] describe hypothesis i. */
export interface StepFn<S> {
  (states: S[], lastTokens: number[]): Promise<StepResult<S>>;
}

export interface BeamOptions<S> {
  /** Beam width (1 = greedy). */
  beam: number;
  /** Maximum generated tokens, end token included. */
  maxLength: number;
  startId: number;
  endId: number;
  lengthPenalty?: LengthPenalty;
  /** Exponent of the wu penalty (default 0.7). */
  alpha?: number;
  /** When given, every logProbs vector must have exactly this length. */
  vocabSize?: number;
  /** Tokens never generated (e.g. pad, unk, start). */
  bannedIds?: number[];
  /** Called exactly once per distinct state object when it is no longer referenced (see header). */
  disposeState?: (s: S) => void;
  /**
   * Keep, per hypothesis, the step's attention row behind each generated token (the step function must
   * return `attention`); results then carry `attention`: one row per returned token.
   */
  attention?: boolean;
}

export interface BeamResult {
  /** Generated tokens without start and end. */
  tokens: number[];
  /** Sum of the log-probabilities of the generated tokens (end token included when finished). */
  logprob: number;
  /** logprob after the length penalty; the quantity that picked this hypothesis. */
  score: number;
  /** Whether it ended with the end token (false: cut at maxLength, or nothing could be generated). */
  finished: boolean;
  /** With BeamOptions.attention: the attention row behind each of `tokens` (the end token's left out). */
  attention?: Float32Array[];
}

/** Score of a hypothesis of `length` generated tokens (end included) with total log-probability `logprob`. */
export function penalizedScore(logprob: number, length: number, mode: LengthPenalty = 'none', alpha = 0.7): number {
  if (mode === 'none' || length <= 0) return logprob;
  if (mode === 'average') return logprob / length;
  return logprob / Math.pow((5 + length) / 6, alpha);
}

interface Hyp<S> {
  tokens: number[];
  logprob: number;
  state: S;
  last: number;
  attention?: Float32Array[];
}

interface Finished {
  tokens: number[];
  logprob: number;
  score: number;
  attention?: Float32Array[];
}

interface Candidate {
  logprob: number;
  /** Index of the parent among the image's live hypotheses. */
  hyp: number;
  token: number;
}

/** Decode every image of `init` (one initial state each); results in the same order. */
export async function beamSearch<S>(init: S[], step: StepFn<S>, opts: BeamOptions<S>): Promise<BeamResult[]> {
  const { beam, maxLength, startId, endId } = opts;
  const mode = opts.lengthPenalty ?? 'none';
  const alpha = opts.alpha ?? 0.7;
  // reference counts by identity; dispose at zero
  const refs = new Map<S, number>();
  const retain = (s: S) => refs.set(s, (refs.get(s) ?? 0) + 1);
  const release = (s: S) => {
    const n = refs.get(s);
    if (n === undefined) return;
    if (n > 1) refs.set(s, n - 1);
    else {
      refs.delete(s);
      opts.disposeState?.(s);
    }
  };

  const banned = new Set(opts.bannedIds ?? []);
  const live: Hyp<S>[][] = init.map((s) => {
    retain(s);
    return [{ tokens: [], logprob: 0, state: s, last: startId, ...(opts.attention ? { attention: [] } : {}) }];
  });
  const finished: Finished[][] = init.map(() => []);
  const done: boolean[] = init.map(() => false);

  try {
    if (!Number.isInteger(beam) || beam < 1) throw new RangeError(`beam must be a positive integer, got ${beam}`);
    if (!Number.isInteger(maxLength) || maxLength < 1)
      throw new RangeError(`maxLength must be a positive integer, got ${maxLength}`);
    for (let t = 0; t < maxLength; t++) {
      const active: number[] = [];
      const states: S[] = [];
      const lastTokens: number[] = [];
      for (let i = 0; i < init.length; i++) {
        if (done[i]) continue;
        active.push(i);
        for (const h of live[i]) {
          states.push(h.state);
          lastTokens.push(h.last);
        }
      }
      if (active.length === 0) break;

      const out = await step(states, lastTokens);
      if (
        !out ||
        !Array.isArray(out.states) ||
        out.states.length !== states.length ||
        !out.logProbs ||
        out.logProbs.length !== states.length
      ) {
        // adopt whatever states came back so they are disposed too
        if (out && Array.isArray(out.states)) for (const s of out.states) if (!refs.has(s)) retain(s);
        throw new Error(
          `beam search: the step function returned ${out?.logProbs?.length ?? 'no'} log-prob vectors and ${out?.states?.length ?? 'no'} states for ${states.length} hypotheses`,
        );
      }
      if (opts.attention && (!Array.isArray(out.attention) || out.attention.length !== states.length)) {
        for (const s of out.states) if (!refs.has(s)) retain(s);
        throw new Error(
          `beam search: attention was asked for, but the step function returned ${out.attention?.length ?? 'no'} attention rows for ${states.length} hypotheses`,
        );
      }
      // hold every returned state while choosing, so none is disposed before its children take it
      for (const s of out.states) retain(s);
      try {
        let offset = 0;
        for (const i of active) {
          const hyps = live[i];
          const cands: Candidate[] = [];
          for (let j = 0; j < hyps.length; j++) {
            const lp = out.logProbs[offset + j];
            if (opts.vocabSize !== undefined && lp.length !== opts.vocabSize) {
              throw new Error(
                `beam search: log-prob vector of length ${lp.length}, expected the vocabulary size ${opts.vocabSize}`,
              );
            }
            for (const v of topTokens(lp, beam + 1, banned))
              cands.push({ logprob: hyps[j].logprob + lp[v], hyp: j, token: v });
          }
          cands.sort((a, b) => b.logprob - a.logprob || a.hyp - b.hyp || a.token - b.token);

          const next: Hyp<S>[] = [];
          for (let r = 0; r < cands.length; r++) {
            if (next.length >= beam && r >= beam) break;
            const c = cands[r];
            const parent = hyps[c.hyp];
            if (c.token === endId) {
              if (r < beam)
                finished[i].push({
                  tokens: parent.tokens,
                  logprob: c.logprob,
                  score: penalizedScore(c.logprob, t + 1, mode, alpha),
                  ...(parent.attention ? { attention: parent.attention } : {}),
                });
            } else if (next.length < beam) {
              const s = out.states[offset + c.hyp];
              retain(s);
              const h: Hyp<S> = { tokens: [...parent.tokens, c.token], logprob: c.logprob, state: s, last: c.token };
              if (opts.attention) h.attention = [...(parent.attention ?? []), out.attention![offset + c.hyp]];
              next.push(h);
            }
          }
          for (const h of hyps) release(h.state);
          offset += hyps.length;
          if (finished[i].length >= beam || next.length === 0 || t === maxLength - 1) {
            done[i] = true;
            // keep the unfinished ones only as a fallback result; their states are no longer needed
            for (const h of next) release(h.state);
            live[i] = finished[i].length > 0 ? [] : next;
          } else live[i] = next;
        }
      } finally {
        for (const s of out.states) release(s);
      }
    }
  } finally {
    // whatever is still referenced (an error, or states of hypotheses kept as fallback results)
    for (const s of [...refs.keys()]) {
      refs.delete(s);
      opts.disposeState?.(s);
    }
  }

  return init.map((_, i) => {
    const f = finished[i];
    if (f.length > 0) {
      let best = f[0];
      for (const x of f) if (x.score > best.score) best = x;
      return {
        tokens: best.tokens,
        logprob: best.logprob,
        score: best.score,
        finished: true,
        ...(best.attention ? { attention: best.attention } : {}),
      };
    }
    const h = live[i][0];
    if (!h)
      return {
        tokens: [],
        logprob: -Infinity,
        score: -Infinity,
        finished: false,
        ...(opts.attention ? { attention: [] } : {}),
      };
    return {
      tokens: h.tokens,
      logprob: h.logprob,
      score: penalizedScore(h.logprob, h.tokens.length, mode, alpha),
      finished: false,
      ...(h.attention ? { attention: h.attention } : {}),
    };
  });
}

/**
 * Indices of the k largest finite entries of `lp` (banned ids and NaN / -Infinity skipped), largest first,
 * lower index first among equal values. Linear in the vocabulary size for small k.
 */
export function topTokens(lp: ArrayLike<number>, k: number, banned: ReadonlySet<number> = new Set()): number[] {
  const idx: number[] = [];
  const val: number[] = [];
  for (let v = 0; v < lp.length; v++) {
    const x = lp[v];
    if (!(x > -Infinity)) continue; // NaN, -Infinity
    if (idx.length === k && x <= val[k - 1]) continue;
    if (banned.has(v)) continue;
    let j = idx.length === k ? k - 1 : idx.length;
    while (j > 0 && val[j - 1] < x) {
      idx[j] = idx[j - 1];
      val[j] = val[j - 1];
      j--;
    }
    idx[j] = v;
    val[j] = x;
  }
  return idx;
}
