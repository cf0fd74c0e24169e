// Corpus BLEU-1..4 (pure), computed exactly like NLTK 3.8's `corpus_bleu` without smoothing:
// - modified precision: hypothesis n-gram counts clipped by the maximum count in any one reference;
//   per sentence the denominator is max(1, number of hypothesis n-grams) (NLTK's guard, so an empty or
//   too-short hypothesis still adds 1 to every denominator);
// - numerators and denominators are summed over the corpus before dividing (micro average);
// - reference length r: the reference length closest to the hypothesis length, ties to the shorter;
// - brevity penalty over the corpus totals: 1 if c > r, 0 if c = 0, else exp(1 - r/c);
// - BLEU-n = BP * exp(sum_{k<=n} (1/n) log p_k) (cumulative, uniform weights);
// - when no unigram matches at all the score is exactly 0; a zero numerator at a higher order is replaced
//   by the smallest normal double (NLTK's method0, sys.float_info.min), so that BLEU-n is ~1e-77, not 0.
import { cookAll, type Cooked } from './ngrams.js';

/** Python's sys.float_info.min: NLTK's stand-in for a zero precision. */
const FLOAT_MIN = 2.2250738585072014e-308;

/** Sufficient statistics of one or more sentences; add them up for a corpus. */
export interface BleuStats {
  /** Clipped matches per order (index k-1). */
  matches: number[];
  /** Hypothesis n-grams per order, each sentence contributing at least 1 (NLTK's max(1, .)). */
  totals: number[];
  hypLen: number;
  /** Sum of the closest reference lengths. */
  refLen: number;
}

export function emptyBleuStats(maxN = 4): BleuStats {
  return { matches: new Array(maxN).fill(0), totals: new Array(maxN).fill(0), hypLen: 0, refLen: 0 };
}

/** Closest reference length to `hypLen`, ties resolved to the shorter reference (NLTK). */
export function closestRefLength(refLens: readonly number[], hypLen: number): number {
  if (refLens.length === 0) throw new Error('BLEU needs at least one reference');
  let best = refLens[0];
  for (const r of refLens) {
    const d = Math.abs(r - hypLen);
    const bd = Math.abs(best - hypLen);
    if (d < bd || (d === bd && r < best)) best = r;
  }
  return best;
}

/** BLEU statistics of one hypothesis against its references (token lists). */
export function bleuStats(hyp: readonly string[], refs: readonly (readonly string[])[], maxN = 4): BleuStats {
  const c = cookAll([hyp], [refs], maxN);
  const s = emptyBleuStats(maxN);
  addBleuStats(s, c.hyps[0], c.refs[0]);
  return s;
}

/** Add one cooked sentence's statistics into `into` (hypothesis and references cooked with one index). */
export function addBleuStats(into: BleuStats, hyp: Cooked, refs: readonly Cooked[]): void {
  if (refs.length === 0) throw new Error('BLEU needs at least one reference');
  const maxN = into.matches.length;
  const hi = hyp.ids;
  const hc = hyp.counts;
  const maxRef = new Int32Array(hi.length);
  for (const r of refs) {
    // merge join of two sorted id lists, order by order
    const ri = r.ids;
    const rc = r.counts;
    for (let k = 0; k < maxN; k++) {
      let a = hyp.offsets[k];
      const aEnd = hyp.offsets[k + 1];
      let b = r.offsets[k];
      const bEnd = r.offsets[k + 1];
      while (a < aEnd && b < bEnd) {
        if (hi[a] < ri[b]) a++;
        else if (hi[a] > ri[b]) b++;
        else {
          if (rc[b] > maxRef[a]) maxRef[a] = rc[b];
          a++;
          b++;
        }
      }
    }
  }
  for (let k = 0; k < maxN; k++) {
    let matched = 0;
    let total = 0;
    for (let a = hyp.offsets[k]; a < hyp.offsets[k + 1]; a++) {
      matched += Math.min(hc[a], maxRef[a]);
      total += hc[a];
    }
    into.matches[k] += matched;
    into.totals[k] += Math.max(1, total);
  }
  into.hypLen += hyp.length;
  into.refLen += closestRefLength(
    refs.map((r) => r.length),
    hyp.length,
  );
}

export function mergeBleuStats(into: BleuStats, s: BleuStats): void {
  for (let k = 0; k < into.matches.length; k++) {
    into.matches[k] += s.matches[k];
    into.totals[k] += s.totals[k];
  }
  into.hypLen += s.hypLen;
  into.refLen += s.refLen;
}

/** NLTK's brevity penalty for total closest-reference length r and hypothesis length c. */
export function brevityPenalty(r: number, c: number): number {
  if (c > r) return 1;
  if (c === 0) return 0;
  return Math.exp(1 - r / c);
}

/** Cumulative BLEU-1..maxN from (summed) statistics. */
export function bleuFromStats(s: BleuStats): number[] {
  const maxN = s.matches.length;
  if (s.matches[0] === 0) return new Array(maxN).fill(0);
  const bp = brevityPenalty(s.refLen, s.hypLen);
  const logs = s.matches.map((m, k) => Math.log(m === 0 ? FLOAT_MIN : m / s.totals[k]));
  const out: number[] = [];
  for (let n = 1; n <= maxN; n++) {
    const w = 1 / n;
    let sum = 0;
    for (let k = 0; k < n; k++) sum += w * logs[k];
    out.push(bp * Math.exp(sum));
  }
  return out;
}

/** Corpus BLEU-1..maxN (NLTK corpus_bleu, no smoothing). hyps[i] is scored against refs[i]. */
export function corpusBleu(
  hyps: readonly (readonly string[])[],
  refs: readonly (readonly (readonly string[])[])[],
  maxN = 4,
): number[] {
  if (hyps.length !== refs.length) throw new Error(`BLEU: ${hyps.length} hypotheses but ${refs.length} reference sets`);
  const c = cookAll(hyps, refs, maxN);
  const s = emptyBleuStats(maxN);
  for (let i = 0; i < hyps.length; i++) addBleuStats(s, c.hyps[i], c.refs[i]);
  return bleuFromStats(s);
}

/** Sentence BLEU-1..maxN (NLTK sentence_bleu, no smoothing: usually ~0 at order 4 for short captions). */
export function sentenceBleu(hyp: readonly string[], refs: readonly (readonly string[])[], maxN = 4): number[] {
  return bleuFromStats(bleuStats(hyp, refs, maxN));
}
