import { describe, expect, it } from 'vitest';
import { basicClean, cleanTokens, type CleanOptions } from '../../src/text/clean.js';

const classic: CleanOptions = { lowercase: true, stripPunctuation: true, dropDigitTokens: true, minWordLength: 1 };

describe('cleanTokens', () => {
  it('applies the classic recipe', () => {
    expect(cleanTokens('A dog, 2 cats and a "B52" bomber.', classic)).toEqual([
      'a',
      'dog',
      'cats',
      'and',
      'a',
      'bomber',
    ]);
  });
  it('keeps each step optional', () => {
    const s = 'A Dog runs 3x.';
    expect(cleanTokens(s, { ...classic, lowercase: false })).toEqual(['A', 'Dog', 'runs']);
    expect(cleanTokens(s, { ...classic, stripPunctuation: false })).toEqual(['a', 'dog', 'runs']);
    expect(cleanTokens(s, { ...classic, dropDigitTokens: false })).toEqual(['a', 'dog', 'runs', '3x']);
    expect(cleanTokens(s, { ...classic, minWordLength: 2 })).toEqual(['dog', 'runs']);
    expect(
      cleanTokens(s, { lowercase: false, stripPunctuation: false, dropDigitTokens: false, minWordLength: 1 }),
    ).toEqual(['A', 'Dog', 'runs', '3x.']);
  });
  it('deletes apostrophes and hyphens inside words (the recipe joins them) and handles unicode', () => {
    expect(cleanTokens("Don't stop the well-known CAFÉ!", classic)).toEqual([
      'dont',
      'stop',
      'the',
      'wellknown',
      'café',
    ]);
    expect(cleanTokens('A boy in a t-shirt - running', basicClean)).toEqual([
      'a',
      'boy',
      'in',
      'a',
      'tshirt',
      'running',
    ]);
  });
  it('gives no tokens for punctuation-only captions', () => {
    expect(cleanTokens(' . , ! ', classic)).toEqual([]);
    expect(cleanTokens('', basicClean)).toEqual([]);
  });
  it('basicClean keeps digit tokens', () => {
    expect(cleanTokens('Two 2 dogs.', basicClean)).toEqual(['two', '2', 'dogs']);
  });
});
