// The image-blind baseline (pure): the single caption that scores best when given to EVERY image,
// chosen on the training split only, then scored on the evaluated images. A model that does not beat it
// has learned the language of the captions but nothing about the pictures.
// Candidates: the most frequent training captions (after metric tokenization); the winner maximises
// corpus BLEU-4 over (up to) `selectionImages` training images spread evenly across the split.
import type { PreparedImage } from '../prep/prepared.js';
import { corpusBleu, tokenize, type TokenizeMode } from './metrics/index.js';
import { corpusOnly, scoreCaptions, type CorpusScores } from './score.js';

export interface Baseline {
  method: 'best-constant-caption';
  /** The caption given to every image. */
  caption: string;
  /** How often it occurs among the training captions. */
  trainCount: number;
  /** Candidates compared (the most frequent training captions). */
  candidates: number;
  /** Training images the winner was chosen on. */
  selectionImages: number;
  /** Scores of the constant caption on the evaluated images. */
  metrics: CorpusScores;
  explanation: string;
}

export interface BaselineOptions {
  /** Most frequent training captions to compare (default 100). */
  candidates?: number;
  /** Training images to choose on (default 1000, spread evenly over the split). */
  selectionImages?: number;
}

/** Evenly spaced picks of at most `n` items (deterministic). */
function spread<T>(xs: readonly T[], n: number): T[] {
  if (xs.length <= n) return [...xs];
  return Array.from({ length: n }, (_, i) => xs[Math.floor((i * xs.length) / n)]);
}

/**
 * The best constant caption for `train`, scored against `evalRefs` (one list of raw references per
 * evaluated image). Undefined when the training split has no captions.
 */
export function imageBlindBaseline(
  train: readonly PreparedImage[],
  evalRefs: readonly string[][],
  mode: TokenizeMode,
  opts: BaselineOptions = {},
): Baseline | undefined {
  const counts = new Map<string, { n: number; raw: string }>();
  for (const im of train)
    for (const c of im.captions) {
      const key = tokenize(c, mode).join(' ');
      if (!key) continue;
      const e = counts.get(key);
      if (e) e.n++;
      else counts.set(key, { n: 1, raw: key });
    }
  if (!counts.size || !evalRefs.length) return undefined;
  const ranked = [...counts.entries()]
    .sort((a, b) => b[1].n - a[1].n || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .slice(0, opts.candidates ?? 100);
  const selection = spread(
    train.filter((im) => im.captions.length),
    opts.selectionImages ?? 1000,
  );
  const selRefs = selection.map((im) => im.captions.map((c) => tokenize(c, mode)));
  let best = ranked[0];
  let bestScore = -1;
  for (const cand of ranked) {
    const toks = cand[0].split(' ');
    const b4 = corpusBleu(
      selRefs.map(() => toks),
      selRefs,
    )[3];
    if (b4 > bestScore) {
      bestScore = b4;
      best = cand;
    }
  }
  const caption = best[0];
  const metrics = corpusOnly(
    scoreCaptions(
      evalRefs.map((refs, i) => ({ id: String(i), candidate: caption, references: refs.length ? refs : [''] })),
      mode,
    ),
  );
  return {
    method: 'best-constant-caption',
    caption,
    trainCount: best[1].n,
    candidates: ranked.length,
    selectionImages: selection.length,
    metrics,
    explanation:
      `the same caption ("${caption}") for every image: of the ${ranked.length} most frequent training captions, the one with the best BLEU-4 ` +
      `on ${selection.length} training images; it ignores the image, so a model must beat it to show it learned from the pictures`,
  };
}
