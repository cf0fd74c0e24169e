import { describe, expect, it } from 'vitest';
import { DataError } from '../../src/errors.js';
import { Vocab } from '../../src/text/vocab.js';

const opts = { unkToken: '<unk>', startToken: 'startseq', endToken: 'endseq', minCount: 2 };

describe('Vocab', () => {
  it('builds: specials first, then words by descending count, ties in code-point order', () => {
    const counts = new Map([
      ['dog', 3],
      ['cat', 3],
      ['a', 5],
      ['rare', 1],
      ['Zebra', 2],
    ]);
    const v = Vocab.build(counts, opts);
    expect(v.tokens).toEqual(['<pad>', '<unk>', 'startseq', 'endseq', 'a', 'cat', 'dog', 'Zebra']);
    expect(v.size).toBe(8);
    expect([v.pad, v.unk, v.start, v.end]).toEqual([0, 1, 2, 3]);
    expect([v.unkToken, v.startToken, v.endToken]).toEqual(['<unk>', 'startseq', 'endseq']);
  });

  it('maps unknown words to unk and round-trips', () => {
    const v = new Vocab(['<pad>', '<unk>', 'startseq', 'endseq', 'a', 'dog']);
    expect(v.id('dog')).toBe(5);
    expect(v.id('cat')).toBe(1);
    expect(v.encode(['a', 'cat', 'dog'])).toEqual([4, 1, 5]);
    expect(v.encodeCaption(['a', 'dog'])).toEqual([2, 4, 5, 3]);
    expect(v.word(5)).toBe('dog');
    expect(() => v.word(6)).toThrow(RangeError);
    expect(() => v.word(-1)).toThrow(RangeError);
  });

  it('decode stops at end and skips start and pad', () => {
    const v = new Vocab(['<pad>', '<unk>', 'startseq', 'endseq', 'a', 'dog']);
    expect(v.decode([2, 4, 0, 1, 5, 3, 4, 4])).toEqual(['a', '<unk>', 'dog']);
    expect(v.decode([4, 5])).toEqual(['a', 'dog']);
  });

  it('a caption word spelled like a special token is encoded as unk', () => {
    const v = new Vocab(['<pad>', '<unk>', 'startseq', 'endseq', 'a']);
    expect(v.encodeCaption(['a', 'endseq', 'startseq', '<pad>'])).toEqual([2, 4, 1, 1, 1, 3]);
  });

  it('build leaves special-token words out of the word list', () => {
    const v = Vocab.build(
      new Map([
        ['endseq', 9],
        ['a', 3],
      ]),
      opts,
    );
    expect(v.tokens).toEqual(['<pad>', '<unk>', 'startseq', 'endseq', 'a']);
  });

  it('rejects invalid vocabularies', () => {
    expect(() => new Vocab(['<pad>', '<unk>', 's'])).toThrow(DataError);
    expect(() => new Vocab(['x', '<unk>', 's', 'e'])).toThrow(/tokens\[0\]/);
    expect(() => new Vocab(['<pad>', '<unk>', 's', 'e', 's'])).toThrow(/repeats/);
    expect(() => Vocab.fromJSON({ nope: 1 }, 'v.json')).toThrow(/v\.json: not a vocabulary/);
    expect(() => Vocab.fromJSON({ tokens: ['<pad>', '', 's', 'e'] }, 'v.json')).toThrow(
      /v\.json: vocabulary: tokens\[1\]/,
    );
    expect(() => Vocab.build(new Map(), { ...opts, endToken: 'startseq' })).toThrow(/must differ/);
  });

  it('toJSON/fromJSON round-trips', () => {
    const v = Vocab.build(new Map([['a', 2]]), opts);
    expect(Vocab.fromJSON(JSON.parse(JSON.stringify(v)), 'x').tokens).toEqual(v.tokens);
  });
});
