// CIDEr-D (pure), computed like pycocoevalcap's `Cider` scorer (coco-caption; pip package pycocoevalcap 1.2),
// which is the CIDEr-D formulation: tf-idf n-gram vectors with clipped similarity and a Gaussian length
// penalty. It is NOT the plain CIDEr of the original paper. Exactly as there:
// - n = 1..4; document frequency df(g) = number of evaluated images whose reference set contains g;
//   ref_len = log(number of evaluated images); idf(g) = ref_len - log(max(1, df(g)));
// - vector value of g in a sentence = count(g) * idf(g) (raw counts, no division by sentence length);
//   norm per order = Euclidean norm of that order's vector;
// - "length" of a sentence = its number of bigrams (coco-caption counts the n==1 index, i.e. 2-grams),
//   delta = hypothesis length - reference length;
// - per order: sum over hypothesis n-grams of min(hyp, ref) * ref, divided by norm_hyp * norm_ref when both
//   are non-zero (else left as is, which is 0), times e^(-delta^2 / (2 sigma^2)), sigma = 6;
// - image score = 10 * mean over orders of (sum over references) / number of references;
// - corpus score = mean over images. With one image every idf is 0, so CIDEr-D is 0 (as in coco-caption).
// Sums run in n-gram id order rather than coco-caption's insertion order: results agree to ~1e-15.
import { cookAll, type Cooked } from './ngrams.js';

export interface CiderOptions {
  /** Highest n-gram order (default 4). */
  n?: number;
  /** Standard deviation of the length penalty (default 6). */
  sigma?: number;
}

export interface CorpusResult {
  /** Mean over images. */
  score: number;
  /** One score per image, in input order. */
  scores: number[];
}

interface Vec {
  /** tf-idf weights aligned with the cooked ids (all orders). */
  w: Float64Array;
  norm: Float64Array;
  /** Number of bigrams. */
  bigrams: number;
}

/** CIDEr-D of token lists. */
export function ciderD(hyps: readonly (readonly string[])[], refs: readonly (readonly (readonly string[])[])[], opts: CiderOptions = {}): CorpusResult {
  const n = opts.n ?? 4;
  if (hyps.length !== refs.length) throw new Error(`CIDEr: ${hyps.length} hypotheses but ${refs.length} reference sets`);
  const c = cookAll(hyps, refs, n);
  return ciderDCooked(c.hyps, c.refs, c.index.size, opts);
}

/** CIDEr-D of cooked sentences (one shared index whose ids are 1..numIds). */
export function ciderDCooked(hyps: readonly Cooked[], refs: readonly (readonly Cooked[])[], numIds: number, opts: CiderOptions = {}): CorpusResult {
  const n = opts.n ?? 4;
  const sigma = opts.sigma ?? 6;
  if (hyps.length !== refs.length) throw new Error(`CIDEr: ${hyps.length} hypotheses but ${refs.length} reference sets`);
  if (hyps.length === 0) return { score: 0, scores: [] };

  // document frequency over the evaluated images' reference sets
  const df = new Int32Array(numIds + 1);
  const stamp = new Int32Array(numIds + 1);
  refs.forEach((rs, i) => {
    if (rs.length === 0) throw new Error(`CIDEr: image ${i} has no references`);
    for (const r of rs) {
      for (let a = 0; a < r.offsets[n]; a++) {
        const g = r.ids[a];
        if (stamp[g] !== i + 1) {
          stamp[g] = i + 1;
          df[g]++;
        }
      }
    }
  });
  const refLen = Math.log(hyps.length);
  const idf = new Float64Array(numIds + 1);
  for (let g = 0; g <= numIds; g++) idf[g] = refLen - Math.log(Math.max(1, df[g]));

  const toVec = (s: Cooked): Vec => {
    const w = new Float64Array(s.ids.length);
    const norm = new Float64Array(n);
    for (let k = 0; k < n; k++) {
      let sq = 0;
      for (let a = s.offsets[k]; a < s.offsets[k + 1]; a++) {
        w[a] = s.counts[a] * idf[s.ids[a]];
        sq += w[a] * w[a];
      }
      norm[k] = Math.sqrt(sq);
    }
    let bigrams = 0;
    if (n >= 2) for (let a = s.offsets[1]; a < s.offsets[2]; a++) bigrams += s.counts[a];
    return { w, norm, bigrams };
  };

  const twoSigma2 = 2 * sigma * sigma;
  const scores: number[] = [];
  for (let i = 0; i < hyps.length; i++) {
    const hs = hyps[i];
    const h = toVec(hs);
    const acc = new Array<number>(n).fill(0);
    for (const rs of refs[i]) {
      const r = toVec(rs);
      const delta = h.bigrams - r.bigrams;
      const penalty = Math.pow(Math.E, -(delta * delta) / twoSigma2);
      for (let k = 0; k < n; k++) {
        const hi = hs.ids;
        const ri = rs.ids;
        const hw = h.w;
        const rw = r.w;
        let val = 0;
        let a = hs.offsets[k];
        const aEnd = hs.offsets[k + 1];
        let b = rs.offsets[k];
        const bEnd = rs.offsets[k + 1];
        while (a < aEnd && b < bEnd) {
          if (hi[a] < ri[b]) a++;
          else if (hi[a] > ri[b]) b++;
          else {
            val += Math.min(hw[a], rw[b]) * rw[b];
            a++;
            b++;
          }
        }
        if (h.norm[k] !== 0 && r.norm[k] !== 0) val /= h.norm[k] * r.norm[k];
        acc[k] += val * penalty;
      }
    }
    let m = 0;
    for (const x of acc) m += x;
    m /= n;
    scores.push((m / refs[i].length) * 10);
  }
  return { score: mean(scores), scores };
}

/** Arithmetic mean (0 for an empty list). */
export function mean(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}
