// Scores candidate captions against references with every metric at once (pure, no I/O). Used by
// `captioner score`, by eval (its report), and by train (validation scores).
import { DataError } from '../errors.js';
import {
  addBleuStats,
  bleuFromStats,
  ciderDCooked,
  cookAll,
  corpusRougeL,
  emptyBleuStats,
  mergeBleuStats,
  tokenize,
  type TokenizeMode,
} from './metrics/index.js';

export interface ScorePair {
  /** Image id, echoed in the per-image scores. */
  id: string;
  candidate: string;
  /** At least one reference caption. */
  references: string[];
}

/** Corpus scores, keyed like coco-caption's output. */
export interface CorpusScores {
  images: number;
  Bleu_1: number;
  Bleu_2: number;
  Bleu_3: number;
  Bleu_4: number;
  CIDEr: number;
  ROUGE_L: number;
}

export interface ImageScores {
  id: string;
  /** Sentence-level BLEU-4 without smoothing (NLTK sentence_bleu): often ~0 for short captions. */
  Bleu_4: number;
  /** This image's CIDEr-D (its idf comes from the whole evaluated set). */
  CIDEr: number;
  ROUGE_L: number;
}

export interface Scores extends CorpusScores {
  perImage: ImageScores[];
}

export const metricKeys = ['Bleu_1', 'Bleu_2', 'Bleu_3', 'Bleu_4', 'CIDEr', 'ROUGE_L'] as const;

/** Score candidate captions against their references. Throws on a pair without references. */
export function scoreCaptions(pairs: readonly ScorePair[], mode: TokenizeMode = 'basic'): Scores {
  const hyps = pairs.map((p) => tokenize(p.candidate, mode));
  const refs = pairs.map((p) => {
    if (p.references.length === 0) throw new DataError(`image ${p.id} has no references`);
    return p.references.map((r) => tokenize(r, mode));
  });
  const cooked = cookAll(hyps, refs, 4);
  const corpus = emptyBleuStats(4);
  const sentence4: number[] = [];
  for (let i = 0; i < hyps.length; i++) {
    const s = emptyBleuStats(4);
    addBleuStats(s, cooked.hyps[i], cooked.refs[i]);
    sentence4.push(bleuFromStats(s)[3]);
    mergeBleuStats(corpus, s);
  }
  const [b1, b2, b3, b4] = bleuFromStats(corpus);
  const cider = ciderDCooked(cooked.hyps, cooked.refs, cooked.index.size);
  const rouge = corpusRougeL(hyps, refs);
  return {
    images: pairs.length,
    Bleu_1: b1,
    Bleu_2: b2,
    Bleu_3: b3,
    Bleu_4: b4,
    CIDEr: cider.score,
    ROUGE_L: rouge.score,
    perImage: pairs.map((p, i) => ({
      id: p.id,
      Bleu_4: sentence4[i],
      CIDEr: cider.scores[i],
      ROUGE_L: rouge.scores[i],
    })),
  };
}

/** Just the corpus numbers (drops perImage), e.g. for `--json` output. */
export function corpusOnly(s: Scores): CorpusScores {
  const { perImage: _drop, ...rest } = s;
  return rest;
}
