import { describe, expect, it } from 'vitest';
import { parseShard, shardOf } from '../../src/util/shard.js';

describe('shardOf', () => {
  it('covers the input exactly once, in order, for many sizes and counts', () => {
    for (let len = 0; len <= 23; len++) {
      const items = Array.from({ length: len }, (_, k) => `img${k}`);
      for (let n = 1; n <= 9; n++) {
        const parts = Array.from({ length: n }, (_, k) => shardOf(items, k + 1, n));
        expect(parts.flat()).toEqual(items);
        const sizes = parts.map((p) => p.length);
        expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
      }
    }
  });
  it('is deterministic', () => {
    const items = ['a', 'b', 'c', 'd', 'e'];
    expect(shardOf(items, 2, 3)).toEqual(shardOf([...items], 2, 3));
    expect(shardOf(items, 1, 3)).toEqual(['a', 'b']);
    expect(shardOf(items, 3, 3)).toEqual(['e']);
  });
  it('rejects bad indices', () => {
    expect(() => shardOf([1], 0, 2)).toThrow(/between 1 and 2/);
    expect(() => shardOf([1], 3, 2)).toThrow(/between 1 and 2/);
    expect(() => shardOf([1], 1, 0)).toThrow(/positive/);
  });
});

describe('parseShard', () => {
  it('parses i/n', () => {
    expect(parseShard('2/4')).toEqual({ index: 2, count: 4 });
    expect(parseShard(' 1 / 1 ')).toEqual({ index: 1, count: 1 });
  });
  it('explains bad input', () => {
    expect(() => parseShard('0/4')).toThrow(/between 1 and 4/);
    expect(() => parseShard('5/4')).toThrow(/between 1 and 4/);
    expect(() => parseShard('2')).toThrow(/expected i\/n/);
    expect(() => parseShard('1/0')).toThrow(/at least 1/);
  });
});
