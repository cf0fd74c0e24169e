import { describe, expect, it } from 'vitest';
import { ConfigError, DataError } from '../../src/errors.js';
import { assignByRatio, assignFromLists, parseSplitList } from '../../src/prep/split.js';

const keys = Array.from({ length: 1000 }, (_, i) => `img${String(i).padStart(4, '0')}.jpg`);
const ratios = { train: 0.8, val: 0.1, test: 0.1 };
const count = (m: Map<string, string>) => {
  const c: Record<string, number> = { train: 0, val: 0, test: 0 };
  for (const s of m.values()) c[s]++;
  return c;
};

describe('assignByRatio', () => {
  it('same seed, same split; different seed, different split', () => {
    const a = assignByRatio(keys, ratios, 42);
    const b = assignByRatio(keys, ratios, 42);
    const c = assignByRatio(keys, ratios, 7);
    expect([...a]).toEqual([...b]);
    expect([...a].some(([k, s]) => c.get(k) !== s)).toBe(true);
  });
  it('does not depend on input order or repeated keys', () => {
    const shuffled = [...keys].reverse();
    shuffled.splice(10, 0, keys[3], keys[3]);
    const a = assignByRatio(keys, ratios, 42);
    const b = assignByRatio(shuffled, ratios, 42);
    expect(new Map([...b].sort())).toEqual(new Map([...a].sort()));
  });
  it('respects the ratios exactly (rounded), normalised by their sum', () => {
    expect(count(assignByRatio(keys, ratios, 1))).toEqual({ train: 800, val: 100, test: 100 });
    expect(count(assignByRatio(keys.slice(0, 7), { train: 0.5, val: 0.5, test: 0 }, 1))).toEqual({
      train: 4,
      val: 3,
      test: 0,
    });
    expect(count(assignByRatio(keys.slice(0, 10), { train: 0.2, val: 0.1, test: 0.1 }, 1))).toEqual({
      train: 5,
      val: 3,
      test: 2,
    });
    expect(count(assignByRatio(keys.slice(0, 10), { train: 1, val: 0, test: 0 }, 1))).toEqual({
      train: 10,
      val: 0,
      test: 0,
    });
  });
  it('mixes the keys (not the sorted order)', () => {
    const a = assignByRatio(keys, ratios, 42);
    const firstTrain = keys.slice(0, 800).filter((k) => a.get(k) === 'train').length;
    expect(firstTrain).toBeLessThan(800);
  });
  it('rejects all-zero ratios', () => {
    expect(() => assignByRatio(keys, { train: 0, val: 0, test: 0 }, 1)).toThrow(ConfigError);
  });
});

describe('split lists', () => {
  it('parses one name a line (CRLF, blanks, spaces)', () => {
    expect(parseSplitList('a.jpg\r\n\r\n b.jpg \r\n', 'tr.txt', 'train').names).toEqual([
      { name: 'a.jpg', line: 1 },
      { name: 'b.jpg', line: 3 },
    ]);
  });
  it('assigns listed keys, leaves others unassigned, reports listed names without captions', () => {
    const lists = [
      parseSplitList('a\nb\n', 'tr', 'train'),
      parseSplitList('c\nz\n', 'de', 'val'),
      parseSplitList('d\n', 'te', 'test'),
    ];
    const r = assignFromLists(['a', 'b', 'c', 'd', 'e'], lists);
    expect([...r.split]).toEqual([
      ['a', 'train'],
      ['b', 'train'],
      ['c', 'val'],
      ['d', 'test'],
    ]);
    expect(r.listedWithoutCaptions).toEqual(['z']);
  });
  it('a name in two lists is an error naming file:line', () => {
    const lists = [parseSplitList('a\nb\n', 'tr.txt', 'train'), parseSplitList('c\nb\n', 'te.txt', 'test')];
    expect(() => assignFromLists(['a'], lists)).toThrow(DataError);
    expect(() => assignFromLists(['a'], lists)).toThrow(
      /^te\.txt:2: "b" is in the test list but also in the train list \(tr\.txt:2\)/,
    );
  });
});
