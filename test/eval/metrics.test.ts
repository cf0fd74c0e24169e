// Metrics against reference values. How the constants were obtained (all from this repo's root):
//   /usr/bin/python3 test/eval/reference/make_expected.py <DATA> <N> <TOKENIZE>
// That script runs NLTK 3.8's corpus_bleu through /work/shared/tools/reference_bleu.py for BLEU-1..4, and a small
// independent Python re-implementation of coco-caption's Cider (CIDEr-D) and Rouge for CIDEr / ROUGE_L.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readReferences } from '../../src/eval/io.js';
import {
  brevityPenalty,
  ciderD,
  closestRefLength,
  corpusBleu,
  lcsLength,
  rougeL,
  sentenceBleu,
  tokenize,
  type TokenizeMode,
} from '../../src/eval/metrics/index.js';
import { scoreCaptions, type ScorePair } from '../../src/eval/score.js';
import { announceSkip, hasShared, sharedData } from '../helpers/shared.js';

type Expected = {
  images: number;
  Bleu_1: number;
  Bleu_2: number;
  Bleu_3: number;
  Bleu_4: number;
  CIDEr: number;
  ROUGE_L: number;
};
const keys = ['Bleu_1', 'Bleu_2', 'Bleu_3', 'Bleu_4', 'CIDEr', 'ROUGE_L'] as const;

/** Equal to 1e-9 absolute, and to 1e-9 relative for the tiny unsmoothed BLEU values (~1e-150). */
function expectClose(actual: number, expected: number, what: string): void {
  const ok =
    Math.abs(actual - expected) <= 1e-9 &&
    (Math.abs(expected) > 1e-6 || Math.abs(actual - expected) <= 1e-9 * Math.abs(expected));
  if (!ok) throw new Error(`${what}: got ${actual}, expected ${expected}`);
}

function check(pairs: ScorePair[], mode: TokenizeMode, exp: Expected, label: string) {
  const s = scoreCaptions(pairs, mode);
  expect(s.images).toBe(exp.images);
  for (const k of keys) expectClose(s[k], exp[k], `${label} ${k}`);
}

const fixture = (name: string): ScorePair[] =>
  JSON.parse(readFileSync(path.join(import.meta.dirname, 'fixtures', name), 'utf8')).pairs;

describe('metrics on the committed fixtures', () => {
  // make_expected.py test/eval/fixtures/coco_val2017_40.json - none|basic
  const coco40 = fixture('coco_val2017_40.json');
  it('COCO val2017 sample (40 images), tokenize none', () => {
    check(
      coco40,
      'none',
      {
        images: 40,
        Bleu_1: 0.6140776699029126,
        Bleu_2: 0.3832967933310261,
        Bleu_3: 0.2584236751129413,
        Bleu_4: 0.1725545143396123,
        CIDEr: 0.7280483318005915,
        ROUGE_L: 0.42424737454615113,
      },
      'coco40/none',
    );
  });
  it('COCO val2017 sample (40 images), tokenize basic', () => {
    check(
      coco40,
      'basic',
      {
        images: 40,
        Bleu_1: 0.6601941747572816,
        Bleu_2: 0.4458342053236841,
        Bleu_3: 0.3019874115295655,
        Bleu_4: 0.2029850453850788,
        CIDEr: 0.9512940195630805,
        ROUGE_L: 0.4696047327150389,
      },
      'coco40/basic',
    );
  });

  // make_expected.py test/eval/fixtures/edge_pairs.json - none (basic gives the same: already clean)
  const edge = fixture('edge_pairs.json');
  it('edge cases together (empty, shorter than every reference, no 4-gram, repeats, 1 to 6 references)', () => {
    const exp = {
      images: 7,
      Bleu_1: 0.45755664391416034,
      Bleu_2: 0.38162862201473097,
      Bleu_3: 0.3001547553593706,
      Bleu_4: 0.24223292432573204,
      CIDEr: 2.0951513751233484,
      ROUGE_L: 0.4577202504075454,
    };
    check(edge, 'none', exp, 'edge/none');
    check(edge, 'basic', exp, 'edge/basic');
  });

  // each edge case alone (one image: CIDEr-D is 0 because every idf is log(1) - log(1) = 0);
  // values from make_expected.py on a pairs file holding only that pair
  const single: Record<string, Omit<Expected, 'images' | 'CIDEr'>> = {
    empty: { Bleu_1: 0, Bleu_2: 0, Bleu_3: 0, Bleu_4: 0, ROUGE_L: 0 },
    short: {
      Bleu_1: 0.006737946999085467,
      Bleu_2: 1.0050780909589607e-156,
      Bleu_3: 5.3303682255053856e-208,
      Bleu_4: 1.2275407386121148e-233,
      ROUGE_L: 0.25311203319502074,
    },
    no4gram: {
      Bleu_1: 0.5714285714285714,
      Bleu_2: 0.4364357804719847,
      Bleu_3: 1.6183099685809177e-103,
      Bleu_4: 9.85444998995587e-155,
      ROUGE_L: 0.6873239436619719,
    },
    exact: { Bleu_1: 1, Bleu_2: 1, Bleu_3: 1, Bleu_4: 1, ROUGE_L: 1 },
    repeat: {
      Bleu_1: 0.2857142857142857,
      Bleu_2: 7.973301625706314e-155,
      Bleu_3: 5.210430485352253e-206,
      Bleu_4: 1.331960397810445e-231,
      ROUGE_L: 0.31202046035805625,
    },
    manyrefs: {
      Bleu_1: 1,
      Bleu_2: 0.9258200997725514,
      Bleu_3: 0.6586337560083495,
      Bleu_4: 8.929334592065812e-78,
      ROUGE_L: 0.6984732824427481,
    },
    oneword: {
      Bleu_1: 0.006737946999085467,
      Bleu_2: 1.0050780909589607e-156,
      Bleu_3: 5.3303682255053856e-208,
      Bleu_4: 1.2275407386121148e-233,
      ROUGE_L: 0.25311203319502074,
    },
  };
  for (const p of edge) {
    it(`one image: ${p.id}`, () => check([p], 'none', { images: 1, CIDEr: 0, ...single[p.id] }, p.id));
  }
  it('two images (short + no4gram)', () => {
    const two = edge.filter((p) => p.id === 'short' || p.id === 'no4gram');
    check(
      two,
      'none',
      {
        images: 2,
        Bleu_1: 0.3345383928243689,
        Bleu_2: 0.22618923685244416,
        Bleu_3: 8.477830908953396e-104,
        Bleu_4: 5.190284426706258e-155,
        CIDEr: 1.4127970558921994,
        ROUGE_L: 0.4702179884284963,
      },
      'two',
    );
  });
});

describe('metrics on real data (../shared/data)', () => {
  announceSkip('metrics on real Flickr8k / COCO captions');

  async function firstCaptionPairs(file: string, n: number): Promise<ScorePair[]> {
    const refs = await readReferences(file);
    const ids = [...refs.byId.keys()];
    return (n > 0 ? ids.slice(0, n) : ids).map((id) => {
      const caps = refs.byId.get(id)!;
      return { id, candidate: caps[0], references: caps.slice(1) };
    });
  }

  // make_expected.py flickr8k 300 none|basic
  it.skipIf(!hasShared)('Flickr8k, first 300 images: caption #0 against #1..#4', async () => {
    const pairs = await firstCaptionPairs(path.join(sharedData, 'flickr8k', 'Flickr8k.token.txt'), 300);
    check(
      pairs,
      'none',
      {
        images: 300,
        Bleu_1: 0.665680473372781,
        Bleu_2: 0.46766703445855656,
        Bleu_3: 0.3301451512724466,
        Bleu_4: 0.23479437300694406,
        CIDEr: 0.8434268603274482,
        ROUGE_L: 0.5267466188148737,
      },
      'f8k/none',
    );
    check(
      pairs,
      'basic',
      {
        images: 300,
        Bleu_1: 0.6546091015169195,
        Bleu_2: 0.4687618904179105,
        Bleu_3: 0.3320081147998091,
        Bleu_4: 0.23196622534414127,
        CIDEr: 0.8623722491355941,
        ROUGE_L: 0.5106404612250804,
      },
      'f8k/basic',
    );
  });

  // make_expected.py coco 0 none|basic
  it.skipIf(!hasShared)('COCO val2017, all 5,000 images: first annotation against the others', async () => {
    const pairs = await firstCaptionPairs(path.join(sharedData, 'coco', 'captions_val2017.json'), 0);
    check(
      pairs,
      'none',
      {
        images: 5000,
        Bleu_1: 0.5817290124050389,
        Bleu_2: 0.38377043748581674,
        Bleu_3: 0.2501257122114272,
        Bleu_4: 0.16317420271033314,
        CIDEr: 0.6442561195941339,
        ROUGE_L: 0.42151781767890806,
      },
      'coco/none',
    );
    check(
      pairs,
      'basic',
      {
        images: 5000,
        Bleu_1: 0.6350626118067979,
        Bleu_2: 0.43795139491962976,
        Bleu_3: 0.29461620136949096,
        Bleu_4: 0.1959187741771454,
        CIDEr: 0.8880168543116305,
        ROUGE_L: 0.47211142202228346,
      },
      'coco/basic',
    );
  });
});

describe('metric pieces, by hand', () => {
  it('tokenizes', () => {
    expect(tokenize('A Dog, running!  fast.', 'basic')).toEqual(['a', 'dog', 'running', 'fast']);
    // punctuation is deleted, as in prep and the classic recipe, not replaced by a space
    expect(tokenize("A boy's t-shirt - don't", 'basic')).toEqual(['a', 'boys', 'tshirt', 'dont']);
    expect(tokenize(' A Dog, running!  fast. ', 'none')).toEqual(['A', 'Dog,', 'running!', 'fast.']);
    expect(tokenize('', 'none')).toEqual([]);
  });

  it('closest reference length prefers the shorter on ties; brevity penalty like NLTK', () => {
    expect(closestRefLength([5, 7], 6)).toBe(5);
    expect(closestRefLength([7, 5], 6)).toBe(5);
    expect(closestRefLength([11, 8, 6, 7], 7)).toBe(7);
    expect(brevityPenalty(13, 12)).toBeCloseTo(Math.exp(1 - 13 / 12), 15);
    expect(brevityPenalty(12, 13)).toBe(1);
    expect(brevityPenalty(5, 0)).toBe(0);
  });

  it('BLEU: identical sentences score 1; clipping counts each reference word once', () => {
    const s = 'the cat sat on the mat'.split(' ');
    expect(corpusBleu([s], [[s]])).toEqual([1, 1, 1, 1]);
    // "the the the the the the the" vs "the cat is on the mat": p1 = 2/7 (Papineni's example)
    const p1 = sentenceBleu('the the the the the the the'.split(' '), ['the cat is on the mat'.split(' ')], 1)[0];
    expect(p1).toBeCloseTo(2 / 7, 15);
  });

  it('LCS and ROUGE-L', () => {
    expect(lcsLength(['a', 'b', 'c', 'd'], ['b', 'd'])).toBe(2);
    expect(lcsLength([], ['a'])).toBe(0);
    // candidate a b c, reference a c d e: lcs 2, P = 2/3, R = 1/2
    const P = 2 / 3;
    const R = 1 / 2;
    expect(rougeL(['a', 'b', 'c'], [['a', 'c', 'd', 'e']])).toBeCloseTo(((1 + 1.44) * P * R) / (R + 1.44 * P), 15);
    // max precision and max recall may come from different references
    const r = rougeL(['a', 'b'], [['a', 'b', 'x', 'y', 'z', 'w'], ['a']]);
    expect(r).toBeCloseTo(((1 + 1.44) * 1 * 1) / (1 + 1.44), 15);
  });

  it('CIDEr-D by hand: two images, idf log 2, orders without n-grams contribute 0', () => {
    // image A: "a b" vs ["a b"]: orders 1 and 2 have cosine 1, orders 3 and 4 have zero norms -> 10 * 2/4 = 5
    // image B: "c" vs ["d"]: nothing shared -> 0. Corpus: 2.5
    const r = ciderD([['a', 'b'], ['c']], [[['a', 'b']], [['d']]]);
    expect(r.scores[0]).toBeCloseTo(5, 12);
    expect(r.scores[1]).toBe(0);
    expect(r.score).toBeCloseTo(2.5, 12);
  });

  it('CIDEr-D length penalty uses bigram counts (coco-caption), sigma 6', () => {
    // A: "x" vs ["x y z"]; B: "q" vs ["r"] (only to make idf non-zero). Unigram "x": df 1, idf log 2.
    // hyp vec1 {x: L}, ref vec1 {x: L, y: L, z: L}: cosine (L*L)/(L * sqrt(3) L) = 1/sqrt(3).
    // lengths in bigrams: hyp 0, ref 2 -> delta -2 -> penalty exp(-4/72). Orders 2..4: hyp norm 0 -> 0.
    const r = ciderD([['x'], ['q']], [[['x', 'y', 'z']], [['r']]]);
    expect(r.scores[0]).toBeCloseTo((10 * (1 / Math.sqrt(3)) * Math.exp(-4 / 72)) / 4, 12);
  });

  it('one image: CIDEr-D is 0 (every idf is 0), other metrics are not', () => {
    const s = scoreCaptions([{ id: 'x', candidate: 'a dog runs home', references: ['a dog runs home'] }]);
    expect(s.CIDEr).toBe(0);
    expect(s.Bleu_1).toBe(1);
    expect(s.ROUGE_L).toBe(1);
    expect(s.perImage).toEqual([{ id: 'x', Bleu_4: 1, CIDEr: 0, ROUGE_L: 1 }]);
  });

  it('per-image scores average to the corpus CIDEr-D and ROUGE-L', () => {
    const pairs = fixture('coco_val2017_40.json');
    const s = scoreCaptions(pairs, 'basic');
    expect(s.perImage).toHaveLength(40);
    expect(s.perImage[0].id).toBe(pairs[0].id);
    const avg = (k: 'CIDEr' | 'ROUGE_L') => s.perImage.reduce((a, p) => a + p[k], 0) / s.perImage.length;
    expect(avg('CIDEr')).toBeCloseTo(s.CIDEr, 12);
    expect(avg('ROUGE_L')).toBeCloseTo(s.ROUGE_L, 12);
  });

  it('rejects an image without references', () => {
    expect(() => scoreCaptions([{ id: 'x', candidate: 'a', references: [] }])).toThrow(/no references/);
  });
});
