import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { buildPrepared, lengthStats, percentile, type BuildOptions, type SplitImage } from '../../src/prep/build.js';

const base: BuildOptions = {
  lowercase: true,
  stripPunctuation: true,
  dropDigitTokens: true,
  minWordLength: 1,
  startToken: 'startseq',
  endToken: 'endseq',
  unkToken: '<unk>',
  minCount: 2,
  maxLength: 34,
  overLength: 'truncate',
};

const images: SplitImage[] = [
  { image: 'b.jpg', file: 'b.jpg', split: 'train', captions: ['A dog runs .', 'A dog sits', 'A zebra !'] },
  { image: 'a.jpg', file: 'sub/a.jpg', split: 'train', captions: ['A cat runs .', ' . ! '] },
  { image: 'c.jpg', file: 'c.jpg', split: 'val', captions: ['A giraffe runs .'] },
  { image: 'd.jpg', file: 'd.jpg', split: 'test', captions: ['42 ...'] },
];

describe('buildPrepared', () => {
  it('builds the vocabulary from training captions only, by min count', () => {
    const r = buildPrepared(images, base);
    // train words: a x4, dog x2, runs x2, sits, zebra, cat -> a, dog, runs kept
    expect(r.vocab.tokens).toEqual(['<pad>', '<unk>', 'startseq', 'endseq', 'a', 'dog', 'runs']);
    expect(buildPrepared(images, { ...base, minCount: 1 }).vocab.tokens).toEqual([
      '<pad>',
      '<unk>',
      'startseq',
      'endseq',
      'a',
      'dog',
      'runs',
      'cat',
      'sits',
      'zebra',
    ]);
  });

  it('refuses a minCount that keeps no word (a vocabulary of only the special tokens), naming the most frequent word', () => {
    expect(() => buildPrepared(images, { ...base, minCount: 5 })).toThrow(ConfigError);
    expect(() => buildPrepared(images, { ...base, minCount: 1e15 })).toThrow(
      'prep.minCount: 1000000000000000 keeps no word in the vocabulary (the most frequent training word, "a", occurs 4 times); lower prep.minCount',
    );
    expect(buildPrepared(images, { ...base, minCount: 4 }).vocab.tokens).toEqual([
      '<pad>',
      '<unk>',
      'startseq',
      'endseq',
      'a',
    ]);
  });

  it('encodes with start/end, unk for rare words, sorted by key, captions kept raw and parallel', () => {
    const r = buildPrepared(images, base);
    expect(r.splits.train.map((i) => i.image)).toEqual(['a.jpg', 'b.jpg']);
    expect(r.splits.train[0]).toEqual({
      image: 'a.jpg',
      file: 'sub/a.jpg',
      captions: ['A cat runs .'],
      tokens: [[2, 4, 1, 6, 3]],
    });
    expect(r.splits.train[1].tokens).toEqual([
      [2, 4, 5, 6, 3],
      [2, 4, 5, 1, 3],
      [2, 4, 1, 3],
    ]);
    expect(r.splits.val[0].tokens).toEqual([[2, 4, 1, 6, 3]]);
  });

  it('drops captions empty after cleaning and images left without captions, and counts them', () => {
    const r = buildPrepared(images, base);
    expect(r.dropped).toEqual({ emptyCaptions: 2, overLengthCaptions: 0, imagesWithoutCaptions: 1 });
    expect(r.splits.test).toEqual([]);
    expect(r.counts).toEqual({
      train: { images: 2, captions: 4 },
      val: { images: 1, captions: 1 },
      test: { images: 0, captions: 0 },
    });
  });

  it('truncates to maxLength tokens (start and end included) or drops, as configured', () => {
    const long: SplitImage[] = [{ image: 'x', file: 'x', split: 'train', captions: ['a b c d e', 'a b', 'a b c'] }];
    const t = buildPrepared(long, { ...base, minCount: 1, maxLength: 5 });
    expect(t.splits.train[0].tokens.map((s) => s.length)).toEqual([5, 4, 5]);
    expect(t.vocab.decode(t.splits.train[0].tokens[0])).toEqual(['a', 'b', 'c']);
    expect(t.truncated).toBe(1);
    expect(t.captionLength.max).toBe(7); // before truncation
    const d = buildPrepared(long, { ...base, minCount: 1, maxLength: 5, overLength: 'drop' });
    expect(d.splits.train[0].captions).toEqual(['a b', 'a b c']);
    expect(d.dropped.overLengthCaptions).toBe(1);
    expect(d.truncated).toBe(0);
    // words of dropped captions do not enter the vocabulary
    expect(d.vocab.has('d')).toBe(false);
  });

  it('applies the cleaning options', () => {
    const im: SplitImage[] = [{ image: 'x', file: 'x', split: 'train', captions: ['A Dog, 3 Cats.'] }];
    const words = (o: Partial<BuildOptions>) => {
      const r = buildPrepared(im, { ...base, minCount: 1, ...o });
      return r.vocab.decode(r.splits.train[0].tokens[0]);
    };
    expect(words({})).toEqual(['a', 'dog', 'cats']);
    expect(words({ lowercase: false })).toEqual(['A', 'Dog', 'Cats']);
    expect(words({ dropDigitTokens: false })).toEqual(['a', 'dog', '3', 'cats']);
    expect(words({ stripPunctuation: false })).toEqual(['a', 'dog,', 'cats.']);
    expect(words({ minWordLength: 2 })).toEqual(['dog', 'cats']);
    expect(words({ startToken: '<s>', endToken: '</s>' })).toEqual(['a', 'dog', 'cats']);
  });

  it('rejects bad token settings', () => {
    expect(() => buildPrepared(images, { ...base, maxLength: 2 })).toThrow(ConfigError);
    expect(() => buildPrepared(images, { ...base, endToken: 'startseq' })).toThrow(/must differ/);
    expect(() => buildPrepared(images, { ...base, unkToken: '<pad>' })).toThrow(/must differ/);
    expect(() => buildPrepared(images, { ...base, startToken: 'a b' })).toThrow(/prep\.startToken/);
  });
});

describe('length statistics', () => {
  it('uses nearest-rank percentiles', () => {
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(xs, 50)).toBe(50);
    expect(percentile(xs, 99)).toBe(99);
    expect(lengthStats([5, 3, 9])).toEqual({ p50: 5, p90: 9, p95: 9, p99: 9, max: 9 });
    expect(lengthStats([])).toEqual({ p50: 0, p90: 0, p95: 0, p99: 0, max: 0 });
  });
});
