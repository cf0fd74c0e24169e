// The incremental CIDEr-D reward (SCST): with document frequencies from the very set being scored it
// gives scoreCaptions' per-image CIDEr-D (to 1e-12) on hand cases and on real Flickr8k captions; frozen
// cooking leaves the n-gram index alone; the optional BLEU-4 term adds sentence BLEU-4 times its weight.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CiderDReward, NgramIndex, sentenceBleu, tokenize } from '../../src/eval/metrics/index.js';
import { scoreCaptions, type ScorePair } from '../../src/eval/score.js';
import { announceSkip, hasShared, sharedData } from '../helpers/shared.js';

function expectSameAsScore(pairs: ScorePair[]): void {
  const want = scoreCaptions(pairs, 'basic').perImage.map((s) => s.CIDEr);
  const reward = new CiderDReward(pairs.map((p) => [p.id, p.references.map((r) => tokenize(r, 'basic'))] as const));
  expect(reward.images).toBe(pairs.length);
  pairs.forEach((p, i) => {
    const got = reward.reward(p.id, tokenize(p.candidate, 'basic'));
    if (!(Math.abs(got - want[i]) <= 1e-12)) throw new Error(`image ${p.id}: reward ${got}, scoreCaptions ${want[i]}`);
    expect(reward.cider(p.id, tokenize(p.candidate, 'basic'))).toBe(got);
  });
}

describe('CiderDReward', () => {
  it('equals scoreCaptions per image on the committed edge cases and the COCO sample', () => {
    const fx = (name: string): ScorePair[] =>
      JSON.parse(readFileSync(path.join(import.meta.dirname, 'fixtures', name), 'utf8')).pairs;
    expectSameAsScore(fx('edge_pairs.json'));
    expectSameAsScore(fx('coco_val2017_40.json'));
  });

  it('equals scoreCaptions on hand cases: unseen words, repeated unseen n-grams, empty candidate, one image', () => {
    const pairs: ScorePair[] = [
      {
        id: 'a',
        candidate: 'a dog runs on the grass',
        references: ['a dog runs on grass', 'the dog is running', 'a brown dog on the green grass'],
      },
      { id: 'b', candidate: 'zebra zebra zebra zebra zebra', references: ['a cat sleeps', 'a cat on a sofa'] },
      { id: 'c', candidate: '', references: ['two men play football', 'men playing a game'] },
      { id: 'd', candidate: 'a cat sleeps on a sofa a cat', references: ['a cat sleeps on a sofa'] },
    ];
    expectSameAsScore(pairs);
    expectSameAsScore(pairs.slice(0, 1)); // one image: every idf is 0
  });

  it('frozen cooking does not grow the index and counts unseen n-grams like a growing cook', () => {
    const idx = new NgramIndex(4);
    idx.cook(['a', 'dog', 'runs']);
    const size = idx.size;
    const frozen = idx.cook(['a', 'dog', 'x', 'y', 'x', 'y', 'x'], true);
    expect(idx.size).toBe(size);
    const grown = new NgramIndex(4).cook(['a', 'dog', 'x', 'y', 'x', 'y', 'x']);
    expect(Array.from(frozen.offsets)).toEqual(Array.from(grown.offsets));
    for (let k = 0; k < 4; k++) {
      const sorted = (c: typeof frozen) => Array.from(c.counts.subarray(c.offsets[k], c.offsets[k + 1])).sort();
      expect(sorted(frozen)).toEqual(sorted(grown));
    }
    // known n-grams keep their ids
    expect(Array.from(frozen.ids.subarray(0, 2))).toEqual(Array.from(idx.cook(['a', 'dog'], true).ids.subarray(0, 2)));
  });

  it('adds bleuWeight x sentence BLEU-4', () => {
    const refs = [
      ['a', 'dog', 'runs', 'on', 'the', 'grass'],
      ['a', 'dog', 'is', 'running', 'on', 'grass'],
    ];
    const refsB = [
      ['a', 'cat', 'sleeps'],
      ['a', 'cat', 'on', 'a', 'sofa'],
    ];
    const cand = ['a', 'dog', 'runs', 'on', 'the', 'grass'];
    const plain = new CiderDReward([
      ['a', refs],
      ['b', refsB],
    ]);
    const mixed = new CiderDReward(
      [
        ['a', refs],
        ['b', refsB],
      ],
      { bleuWeight: 0.5 },
    );
    const b4 = sentenceBleu(cand, refs)[3];
    expect(b4).toBeGreaterThan(0.5);
    expect(mixed.reward('a', cand)).toBeCloseTo(plain.reward('a', cand) + 0.5 * b4, 12);
  });

  it('rejects unknown images, empty reference sets and repeated ids', () => {
    const r = new CiderDReward([['a', [['x']]]]);
    expect(() => r.reward('zz', ['x'])).toThrow(/no references for image zz/);
    expect(() => new CiderDReward([['a', []]])).toThrow(/no references/);
    expect(
      () =>
        new CiderDReward([
          ['a', [['x']]],
          ['a', [['y']]],
        ]),
    ).toThrow(/twice/);
  });
});

describe('CiderDReward on real captions (../shared/data)', () => {
  announceSkip('CiderDReward against scoreCaptions on Flickr8k');
  it.skipIf(!hasShared)(
    "equals scoreCaptions per image on 300 Flickr8k images (own and other images' captions)",
    () => {
      const lines = readFileSync(path.join(sharedData, 'flickr8k', 'Flickr8k.token.txt'), 'utf8').split('\n');
      const byImage = new Map<string, string[]>();
      for (const line of lines) {
        const tab = line.indexOf('\t');
        if (tab < 0) continue;
        const id = line.slice(0, tab).replace(/#\d+$/, '');
        const list = byImage.get(id) ?? [];
        list.push(line.slice(tab + 1));
        byImage.set(id, list);
      }
      const images = [...byImage.entries()].filter(([, c]) => c.length >= 5).slice(0, 300);
      expect(images.length).toBe(300);
      // candidate: the image's first caption (refs: the other four), or every third image another image's caption
      const pairs: ScorePair[] = images.map(([id, caps], i) => ({
        id,
        candidate: i % 3 === 2 ? images[(i + 7) % 300][1][0] : caps[0],
        references: caps.slice(1),
      }));
      expectSameAsScore(pairs);
    },
  );
});
