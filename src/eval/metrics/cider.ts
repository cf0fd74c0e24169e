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

/** CIDEr-D of token lists. */
export function ciderD(
  hyps: readonly (readonly string[])[],
  refs: readonly (readonly (readonly string[])[])[],
  opts: CiderOptions = {},
): CorpusResult {
  const n = opts.n ?? 4;
  if (hyps.length !== refs.length)
    throw new Error(`CIDEr: ${hyps.length} hypotheses but ${refs.length} reference sets`);
  const c = cookAll(hyps, refs, n);
  return ciderDCooked(c.hyps, c.refs, c.index.size, opts);
}

/** CIDEr-D of cooked sentences (one shared index whose ids are 1..numIds). */
export function ciderDCooked(
  hyps: readonly Cooked[],
  refs: readonly (readonly Cooked[])[],
  numIds: number,
  opts: CiderOptions = {},
): CorpusResult {
  const n = opts.n ?? 4;
  const sigma = opts.sigma ?? 6;
  if (hyps.length !== refs.length)
    throw new Error(`CIDEr: ${hyps.length} hypotheses but ${refs.length} reference sets`);
  if (hyps.length === 0) return { score: 0, scores: [] };
  const idf = ciderIdf(documentFrequencies(refs, numIds, n), hyps.length);
  const scores: number[] = [];
  for (let i = 0; i < hyps.length; i++) {
    scores.push(
      ciderDImage(
        hyps[i],
        refs[i],
        refs[i].map((r) => ciderVec(r, idf, n)),
        idf,
        n,
        sigma,
      ),
    );
  }
  return { score: mean(scores), scores };
}

/**
 * Document frequency of every n-gram id (orders 1..n) over reference sets: df[g] = number of sets with g.
 * `numIds`: the index's size when the references were cooked (ids 1..numIds).
 */
export function documentFrequencies(refs: Iterable<readonly Cooked[]>, numIds: number, n = 4): Int32Array {
  const df = new Int32Array(numIds + 1);
  const stamp = new Int32Array(numIds + 1);
  let i = 0;
  for (const rs of refs) {
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
    i++;
  }
  return df;
}

/** idf table: idf[g] = log(images) - log(max(1, df[g])); ids past the table (unseen n-grams) get `unseen`. */
export interface Idf {
  table: Float64Array;
  /** log(images): the idf of an n-gram no reference set has. */
  unseen: number;
}

export function ciderIdf(df: Int32Array, images: number): Idf {
  const refLen = Math.log(images);
  const table = new Float64Array(df.length);
  for (let g = 0; g < df.length; g++) table[g] = refLen - Math.log(Math.max(1, df[g]));
  return { table, unseen: refLen };
}

/** One sentence's tf-idf vector: weights aligned with the cooked ids, norm per order, bigram count. */
export interface CiderVec {
  /** tf-idf weights aligned with the cooked ids (all orders). */
  w: Float64Array;
  norm: Float64Array;
  /** Number of bigrams (coco-caption's "length"). */
  bigrams: number;
}

export function ciderVec(s: Cooked, idf: Idf, n = 4): CiderVec {
  const w = new Float64Array(s.ids.length);
  const norm = new Float64Array(n);
  const table = idf.table;
  for (let k = 0; k < n; k++) {
    let sq = 0;
    for (let a = s.offsets[k]; a < s.offsets[k + 1]; a++) {
      const g = s.ids[a];
      w[a] = s.counts[a] * (g < table.length ? table[g] : idf.unseen);
      sq += w[a] * w[a];
    }
    norm[k] = Math.sqrt(sq);
  }
  let bigrams = 0;
  if (n >= 2) for (let a = s.offsets[1]; a < s.offsets[2]; a++) bigrams += s.counts[a];
  return { w, norm, bigrams };
}

/**
 * One image's CIDEr-D: hypothesis `hs` against the cooked references `refs` and their vectors `refVecs`
 * (same order): 10 * mean over orders of the mean over references of the clipped, length-penalised cosine.
 */
export function ciderDImage(
  hs: Cooked,
  refs: readonly Cooked[],
  refVecs: readonly CiderVec[],
  idf: Idf,
  n = 4,
  sigma = 6,
): number {
  const h = ciderVec(hs, idf, n);
  const twoSigma2 = 2 * sigma * sigma;
  const acc = new Array<number>(n).fill(0);
  for (let j = 0; j < refVecs.length; j++) {
    const r = refVecs[j];
    const rs = refs[j];
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
  return (m / refVecs.length) * 10;
}

/** Arithmetic mean (0 for an empty list). */
export function mean(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}
