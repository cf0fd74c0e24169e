// ROUGE-L (pure), computed like coco-caption's `Rouge`: longest common subsequence between the candidate and
// each reference; precision = lcs / |candidate|, recall = lcs / |reference|; the maximum precision and the
// maximum recall are taken over the references separately (possibly from different references), then
// F = (1 + beta^2) P R / (R + beta^2 P) with beta = 1.2, and 0 when either is 0. Corpus score: mean over
// images. An empty candidate scores 0 (coco-caption splits "" into one empty token that matches nothing).
import { mean, type CorpusResult } from './cider.js';

/** Length of the longest common subsequence of two token lists (O(|a||b|) time, O(min) memory). */
export function lcsLength(a: readonly string[], b: readonly string[]): number {
  if (a.length < b.length) [a, b] = [b, a];
  if (b.length === 0) return 0;
  let prev = new Int32Array(b.length + 1);
  let cur = new Int32Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    const ai = a[i - 1];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = ai === b[j - 1] ? prev[j - 1] + 1 : Math.max(prev[j], cur[j - 1]);
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length];
}

/** ROUGE-L of one candidate against its references. */
export function rougeL(hyp: readonly string[], refs: readonly (readonly string[])[], beta = 1.2): number {
  if (refs.length === 0) throw new Error('ROUGE-L needs at least one reference');
  let precMax = 0;
  let recMax = 0;
  for (const r of refs) {
    const lcs = lcsLength(r, hyp);
    const prec = hyp.length === 0 ? 0 : lcs / hyp.length;
    const rec = r.length === 0 ? 0 : lcs / r.length;
    if (prec > precMax) precMax = prec;
    if (rec > recMax) recMax = rec;
  }
  if (precMax === 0 || recMax === 0) return 0;
  const b2 = beta * beta;
  return ((1 + b2) * precMax * recMax) / (recMax + b2 * precMax);
}

export function corpusRougeL(
  hyps: readonly (readonly string[])[],
  refs: readonly (readonly (readonly string[])[])[],
  beta = 1.2,
): CorpusResult {
  if (hyps.length !== refs.length)
    throw new Error(`ROUGE-L: ${hyps.length} hypotheses but ${refs.length} reference sets`);
  const scores = hyps.map((h, i) => rougeL(h, refs[i], beta));
  return { score: mean(scores), scores };
}
