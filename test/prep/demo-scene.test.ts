import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  CAPTIONS_PER_IMAGE,
  COLOUR_NAMES,
  DEMO_VERSION,
  MULTI_SIZES,
  SHAPE_NAMES,
  captionsFor,
  demoTexts,
  demoVocabulary,
  imageName,
  makeScene,
  nounPhrase,
  sceneGroups,
  sceneSeed,
  sceneSvg,
  splitNames,
  type DemoScene,
  type DemoShape,
} from '../../src/prep/demo-scene.js';
import { nearestColour } from './demo-colours.js';

const SEEDS = [0, 1, 7, 12345];
/** A scene of the default ('single') kind: one shape, or a pair; never a multi layout. */
type SingleKindScene = DemoScene & { layout: Exclude<DemoScene['layout'], { kind: 'multi' }> };
function singleKind(s: DemoScene): SingleKindScene {
  if (s.layout.kind === 'multi') throw new Error(`scene ${s.index}: a multi layout from a single-kind makeScene`);
  return s as SingleKindScene; // narrowed by the check above (TypeScript does not narrow the parent object)
}
const scenes: SingleKindScene[] = [];
for (const seed of SEEDS) for (let i = 0; i < 750; i++) scenes.push(singleKind(makeScene(seed, i)));
const colourWords = new Set<string>(COLOUR_NAMES);
const shapeWords = new Set<string>(SHAPE_NAMES);
const words = (c: string) => c.split(' ');

describe('makeScene', () => {
  it('is deterministic by seed and index, and independent of the dataset size', () => {
    expect(makeScene(3, 17)).toEqual(makeScene(3, 17));
    expect(makeScene(3, 17)).not.toEqual(makeScene(4, 17));
    expect(makeScene(3, 17)).not.toEqual(makeScene(3, 18));
    expect(sceneSeed(0, 0)).not.toBe(sceneSeed(0, 1));
    expect(sceneSeed(1, 0)).not.toBe(sceneSeed(0, 1));
  });

  it('keeps every shape inside the image and pairs apart, with distinct colours', () => {
    for (const s of scenes) {
      expect(s.shapes.length).toBe(s.layout.kind === 'single' ? 1 : 2);
      for (const sh of s.shapes) {
        const ext = sh.r * 1.05; // the star's points reach a little beyond r
        expect(sh.cx - ext).toBeGreaterThan(0);
        expect(sh.cy - ext).toBeGreaterThan(0);
        expect(sh.cx + ext).toBeLessThan(1);
        expect(sh.cy + ext).toBeLessThan(1);
        expect(sh.size === 'small' ? sh.r <= 0.14 : sh.r >= 0.17).toBe(true);
        // the drawn colour stays closest to its name
        expect(nearestColour(sh.fill)).toBe(sh.colour);
      }
      if (s.layout.kind === 'pair') {
        const [a, b] = s.shapes;
        expect(a.colour).not.toBe(b.colour);
        expect(Math.hypot(a.cx - b.cx, a.cy - b.cy)).toBeGreaterThan((a.r + b.r) * 1.05);
        if (s.layout.axis === 'horizontal') expect(b.cx - a.cx).toBeGreaterThan(0.3);
        else expect(b.cy - a.cy).toBeGreaterThan(0.3);
      } else {
        const { cx, cy } = s.shapes[0];
        const where = {
          left: cx < 0.35,
          right: cx > 0.65,
          top: cy < 0.35,
          bottom: cy > 0.65,
          center: Math.abs(cx - 0.5) < 0.05 && Math.abs(cy - 0.5) < 0.05,
        };
        expect(where[s.layout.position]).toBe(true);
      }
    }
  });

  it('draws colours, shapes, sizes and layouts roughly uniformly', () => {
    const count = (key: (s: DemoScene) => string[]) => {
      const m = new Map<string, number>();
      for (const s of scenes) for (const k of key(s)) m.set(k, (m.get(k) ?? 0) + 1);
      return m;
    };
    const near = (m: Map<string, number>, keys: readonly string[], tol = 0.15) => {
      const total = [...m.values()].reduce((a, b) => a + b, 0);
      expect([...m.keys()].sort()).toEqual([...keys].sort());
      for (const k of keys) expect(Math.abs(m.get(k)! / (total / keys.length) - 1), k).toBeLessThan(tol);
    };
    near(
      count((s) => s.shapes.map((x) => x.colour)),
      COLOUR_NAMES,
    );
    near(
      count((s) => s.shapes.map((x) => x.shape)),
      SHAPE_NAMES,
    );
    near(
      count((s) => s.shapes.map((x) => x.size)),
      ['small', 'large'],
    );
    near(
      count((s) => [s.layout.kind]),
      ['single', 'pair'],
    );
    near(
      count((s) => (s.layout.kind === 'single' ? [s.layout.position] : [])),
      ['left', 'right', 'top', 'bottom', 'center'],
      0.2,
    );
    near(
      count((s) => [s.background.kind]),
      ['plain', 'gradient', 'noise'],
      0.4,
    );
  });
});

describe('captionsFor', () => {
  it('gives five different captions, deterministically', () => {
    for (const s of scenes.slice(0, 500)) {
      const caps = captionsFor(s, 5);
      expect(caps).toHaveLength(CAPTIONS_PER_IMAGE);
      expect(new Set(caps).size).toBe(CAPTIONS_PER_IMAGE);
      expect(captionsFor(s, 5)).toEqual(caps);
    }
  });

  it('names exactly the colours and shapes drawn, in an order that matches the layout', () => {
    for (const s of scenes) {
      for (const c of captionsFor(s, 1)) {
        const w = words(c);
        const colours = w.filter((x) => colourWords.has(x));
        const shapes = w.filter((x) => shapeWords.has(x));
        let order = s.shapes;
        // "b to the right of a", "b below a", "b under a" mention the second shape first
        if (/right of|below|under/.test(c)) order = [...s.shapes].reverse();
        expect(colours, c).toEqual(order.map((x) => x.colour));
        expect(shapes, c).toEqual(order.map((x) => x.shape));
      }
    }
  });

  it('uses the right size and position words', () => {
    const sizeOf: Record<string, string> = { small: 'small', little: 'small', large: 'large', big: 'large' };
    for (const s of scenes) {
      for (const c of captionsFor(s, 2)) {
        const w = words(c);
        // a size word, when present, sits before the colour word of its shape (or after the article in "a small circle that is red")
        for (let i = 0; i < w.length; i++) {
          if (!(w[i] in sizeOf)) continue;
          const shapeWord = w.slice(i).find((x) => shapeWords.has(x));
          const colourAfter = w.slice(i).find((x) => colourWords.has(x));
          const target = s.shapes.find(
            (x) => x.shape === shapeWord && (c.includes('that is') || x.colour === colourAfter),
          )!;
          expect(target, c).toBeDefined();
          expect(sizeOf[w[i]], c).toBe(target.size);
        }
        const posWords = w.filter((x) => ['left', 'right', 'top', 'bottom', 'center', 'middle'].includes(x));
        if (s.layout.kind === 'single') {
          const p = s.layout.position;
          for (const x of posWords) expect(x === 'middle' ? 'center' : x, c).toBe(p);
        } else if (s.layout.axis === 'horizontal') {
          for (const x of posWords) expect(['left', 'right'], c).toContain(x);
          expect(c).not.toMatch(/above|below|under/);
        } else {
          for (const x of posWords) expect(['top', 'bottom'], c).toContain(x);
          expect(c).not.toMatch(/left|right|next/);
        }
      }
    }
  });

  it('uses a small vocabulary and correct articles', () => {
    const vocab = new Set(demoVocabulary());
    expect(vocab.size).toBeGreaterThanOrEqual(30);
    expect(vocab.size).toBeLessThanOrEqual(50);
    const seen = new Set<string>();
    let longest = 0;
    for (const s of scenes) {
      for (const c of captionsFor(s, 3)) {
        expect(c).toMatch(/^[a-z]+( [a-z]+)*$/);
        expect(c).not.toMatch(/\ba [aeiou]|\ban [^aeiou ]/);
        words(c).forEach((x) => seen.add(x));
        longest = Math.max(longest, words(c).length);
      }
    }
    for (const x of seen) expect(vocab.has(x), x).toBe(true);
    // every word of the vocabulary is actually used
    expect([...seen].sort()).toEqual([...vocab].sort());
    // short captions (test/config/configs.test.ts checks they fit configs/demo.yaml's maxLength)
    expect(longest).toBeLessThanOrEqual(15);
  });

  it('nounPhrase picks the article', () => {
    expect(nounPhrase({ shape: 'star', colour: 'orange', size: 'small' }, false)).toBe('an orange star');
    expect(nounPhrase({ shape: 'star', colour: 'orange', size: 'small' }, true)).toBe('a small orange star');
    expect(nounPhrase({ shape: 'circle', colour: 'red', size: 'large' }, true, 'big')).toBe('a big red circle');
  });
});

describe('sceneSvg', () => {
  it('draws one element per shape in its colour at the requested size', () => {
    for (const s of scenes.slice(0, 200)) {
      const svg = sceneSvg(s, 128);
      expect(svg).toMatch(/^<svg [^>]*width="128" height="128"/);
      expect(svg.endsWith('</svg>')).toBe(true);
      for (const sh of s.shapes) {
        const hex = '#' + sh.fill.map((v) => v.toString(16).padStart(2, '0')).join('');
        expect(svg).toContain(`fill="${hex}"`);
      }
      expect(svg.match(/<(circle|rect x|polygon)/g)!.length).toBe(s.shapes.length);
      expect(svg).not.toMatch(/NaN|undefined/);
    }
  });
});

describe('splitNames and demoTexts', () => {
  it('splits 80/10/10, disjoint and complete, deterministically', () => {
    const names = Array.from({ length: 1000 }, (_, i) => imageName(i));
    const sp = splitNames(names, 9);
    expect([sp.train.length, sp.val.length, sp.test.length]).toEqual([800, 100, 100]);
    expect(new Set([...sp.train, ...sp.val, ...sp.test]).size).toBe(1000);
    expect(splitNames(names, 9)).toEqual(sp);
    expect(splitNames(names, 10)).not.toEqual(sp);
    expect(splitNames(['a.jpg'], 1)).toEqual({ train: ['a.jpg'], val: [], test: [] });
    const three = splitNames(['a.jpg', 'b.jpg', 'c.jpg'], 1);
    expect([three.train.length, three.val.length, three.test.length]).toEqual([1, 1, 1]);
    const twelve = splitNames(names.slice(0, 12), 1);
    expect([twelve.train.length, twelve.val.length, twelve.test.length]).toEqual([10, 1, 1]);
  });

  it('writes the Flickr8k token format, five numbered captions per image', () => {
    const t = demoTexts(4, 30);
    const lines = t.captions.trimEnd().split('\n');
    expect(lines).toHaveLength(150);
    lines.forEach((l, k) => {
      expect(l).toMatch(/^demo_\d{5}\.jpg#[0-4]\t[a-z ]+$/);
      expect(l.startsWith(`${imageName(Math.floor(k / 5))}#${k % 5}\t`)).toBe(true);
    });
    expect(t.trainImages.trimEnd().split('\n')).toEqual(t.split.train);
    expect(t.valImages.trimEnd().split('\n')).toEqual(t.split.val);
    expect(t.testImages.trimEnd().split('\n')).toEqual(t.split.test);
  });

  it('single scenes are pinned: captions and drawings of seed 1 never change without a DEMO_VERSION bump', () => {
    // DEMO_VERSION 1 (checked against the commit before multi scenes): change a hash only with a version bump
    expect(DEMO_VERSION).toBe(1);
    const sha = (s: string) => createHash('sha256').update(s).digest('hex');
    expect(sha(demoTexts(1, 200).captions)).toBe('a619a457d9a97f2d493ba625a489be3f880e96b6547d601dac06c649caf96ae5');
    expect(sha(Array.from({ length: 50 }, (_, i) => sceneSvg(makeScene(1, i), 224)).join('\n'))).toBe(
      '748db94af8684b0f0593b15a25f145b7f1130e641994aff7814fdac33678d8f9',
    );
  });

  it('is byte-identical for the same seed; a smaller dataset is a prefix of a larger one', () => {
    expect(demoTexts(4, 50)).toEqual(demoTexts(4, 50));
    expect(demoTexts(5, 50).captions).not.toBe(demoTexts(4, 50).captions);
    expect(demoTexts(4, 50).captions.startsWith(demoTexts(4, 10).captions)).toBe(true);
  });
});

// ---------------------------------------------------------------- multi scenes

describe('multi scenes', () => {
  const multi: DemoScene[] = [];
  for (const seed of SEEDS) for (let i = 0; i < 300; i++) multi.push(makeScene(seed, i, 'multi'));
  /** How far a shape reaches (its bounding circle; a tilted square or a star point stays inside 1.05 r). */
  const reach = (s: DemoShape) => s.r * 1.05;
  /** Independent of the generator: a gap of at least 0.02 between the two reaches along the axis. */
  const leftOf = (a: DemoShape, b: DemoShape) => b.cx - a.cx - reach(a) - reach(b) >= 0.02;
  const above = (a: DemoShape, b: DemoShape) => b.cy - a.cy - reach(a) - reach(b) >= 0.02;
  const COUNT: Record<string, number> = { a: 1, an: 1, two: 2, three: 3 };
  const SIZE: Record<string, string> = { small: 'small', little: 'small', large: 'large', big: 'large' };
  const RELATIONS: [string, (a: DemoShape, b: DemoShape) => boolean][] = [
    ['to the left of', leftOf],
    ['to the right of', (a, b) => leftOf(b, a)],
    ['above', above],
    ['below', (a, b) => above(b, a)],
  ];
  interface NP {
    start: number;
    end: number;
    count: number;
    size?: string;
    colour?: string;
    shape?: string;
  }

  /** The noun phrases of a caption: "a small red circle", "two green triangles", "three shapes", "two red shapes". */
  function nounPhrases(w: string[]): NP[] {
    const out: NP[] = [];
    for (let i = 0; i < w.length; i++) {
      if (!(w[i] in COUNT)) continue;
      let j = i + 1;
      const size = SIZE[w[j]];
      if (size) j++;
      const colour = colourWords.has(w[j]) ? w[j++] : undefined;
      const noun = w[j];
      const plural = COUNT[w[i]] > 1;
      let shape: string | undefined;
      if (noun === 'shapes' && plural) shape = undefined;
      else if (shapeWords.has(plural ? noun?.slice(0, -1) : noun) && (!plural || noun.endsWith('s')))
        shape = plural ? noun.slice(0, -1) : noun;
      else continue; // "a picture", "an image"
      out.push({ start: i, end: j + 1, count: COUNT[w[i]], size, colour, shape });
      i = j;
    }
    return out;
  }
  const denote = (np: NP, s: DemoScene) =>
    s.shapes.filter(
      (x) =>
        (!np.colour || x.colour === np.colour) &&
        (!np.shape || x.shape === np.shape) &&
        (!np.size || x.size === np.size),
    );

  /** Throws unless every word of the caption is accounted for and true of the scene. */
  function checkTrue(c: string, s: DemoScene): { relation: boolean; count: boolean } {
    const w = words(c);
    const nps = nounPhrases(w);
    expect(nps.length, c).toBeGreaterThan(0);
    let relation = false;
    let count = false;
    for (const np of nps) {
      // exactly as many shapes as the phrase says ("a small green triangle": the only small one)
      expect(denote(np, s).length, c).toBe(np.count);
      if (np.count > 1) count = true;
      if (np.count === 1) expect(w[np.start], c).toBe(/^[aeiou]/.test(w[np.start + 1]) ? 'an' : 'a');
    }
    // what precedes the first phrase, lies between phrases, and follows the last
    const head = w.slice(0, nps[0].start).join(' ');
    expect(['', 'there is', 'there are', 'a picture of', 'an image with'], c).toContain(head);
    if (head.startsWith('there')) expect(head, c).toBe(nps[0].count === 1 ? 'there is' : 'there are');
    for (let k = 0; k + 1 < nps.length; k++) {
      const between = w.slice(nps[k].end, nps[k + 1].start).join(' ');
      if (between === 'and') continue;
      // "three shapes a red circle a blue square and a green star": the count, then the list
      if (between === '' && k === 0 && !nps[0].colour && !nps[0].shape) {
        expect(
          nps.slice(1).reduce((n, np) => n + np.count, 0),
          c,
        ).toBe(nps[0].count);
        continue;
      }
      const rel = RELATIONS.find(([p]) => p === between);
      expect(rel, `${c}: "${between}"`).toBeDefined();
      expect(nps.length, c).toBe(2);
      relation = true;
      const [as, bs] = [denote(nps[k], s), denote(nps[k + 1], s)];
      expect(
        as.some((x) => bs.includes(x)),
        c,
      ).toBe(false);
      for (const a of as) for (const b of bs) expect(rel![1](a, b), `${c}: ${JSON.stringify([a, b])}`).toBe(true);
    }
    const tail = w.slice(nps[nps.length - 1].end).join(' ');
    expect(['', 'side by side', 'one above the other'], c).toContain(tail);
    const last = denote(nps[nps.length - 1], s);
    const pairs = last.flatMap((a, i) => last.slice(i + 1).map((b) => [a, b] as const));
    if (tail === 'side by side') {
      expect(last.length, c).toBeGreaterThan(1);
      for (const [a, b] of pairs) {
        expect(leftOf(a, b) || leftOf(b, a), c).toBe(true);
        expect(above(a, b) || above(b, a), c).toBe(false);
      }
    }
    if (tail === 'one above the other') {
      expect(last.length, c).toBe(2);
      const [a, b] = last;
      expect(above(a, b) || above(b, a), c).toBe(true);
      expect(leftOf(a, b) || leftOf(b, a), c).toBe(false);
    }
    // "three shapes" and "two red shapes" count everything (of that colour)
    return { relation, count };
  }

  it('is deterministic by seed and index, and single stays the default', () => {
    expect(makeScene(3, 17, 'multi')).toEqual(makeScene(3, 17, 'multi'));
    expect(makeScene(3, 17, 'multi')).not.toEqual(makeScene(4, 17, 'multi'));
    expect(makeScene(3, 17, 'single')).toEqual(makeScene(3, 17));
    expect(demoTexts(4, 50, 'multi')).toEqual(demoTexts(4, 50, 'multi'));
    expect(demoTexts(4, 50, 'single')).toEqual(demoTexts(4, 50));
    expect(demoTexts(4, 50, 'multi').captions).not.toBe(demoTexts(4, 50).captions);
    expect(demoTexts(4, 50, 'multi').captions.startsWith(demoTexts(4, 10, 'multi').captions)).toBe(true);
    // the split depends on the names only: the same for both kinds
    expect(demoTexts(4, 50, 'multi').split).toEqual(demoTexts(4, 50).split);
  });

  it('draws 2-3 shapes inside the image that never overlap; a group shares colour and shape, groups differ in colour', () => {
    for (const s of multi) {
      expect(s.layout.kind).toBe('multi');
      if (s.layout.kind !== 'multi') continue;
      expect([2, 3]).toContain(s.shapes.length);
      expect(s.layout.groups.reduce((a, b) => a + b, 0)).toBe(s.shapes.length);
      for (const sh of s.shapes) {
        for (const v of [sh.cx - reach(sh), sh.cy - reach(sh)]) expect(v).toBeGreaterThan(0);
        for (const v of [sh.cx + reach(sh), sh.cy + reach(sh)]) expect(v).toBeLessThan(1);
        const [lo, hi] = MULTI_SIZES[sh.size];
        expect(sh.r >= lo && sh.r <= hi).toBe(true);
        expect(nearestColour(sh.fill)).toBe(sh.colour);
      }
      for (let i = 0; i < s.shapes.length; i++) {
        for (let j = i + 1; j < s.shapes.length; j++) {
          const [a, b] = [s.shapes[i], s.shapes[j]];
          expect(Math.hypot(a.cx - b.cx, a.cy - b.cy)).toBeGreaterThan(reach(a) + reach(b) + 0.02);
        }
      }
      const groups = sceneGroups(s);
      expect(groups.map((g) => g.length).sort()).toEqual([...s.layout.groups].sort());
      for (const g of groups) for (const x of g) expect([x.colour, x.shape]).toEqual([g[0].colour, g[0].shape]);
      expect(new Set(groups.map((g) => g[0].colour)).size).toBe(groups.length);
    }
  });

  it('draws every colour, shape, size and group pattern', () => {
    const seen = (f: (s: DemoScene) => string[]) => new Set(multi.flatMap(f));
    expect([...seen((s) => s.shapes.map((x) => x.colour))].sort()).toEqual([...COLOUR_NAMES].sort());
    expect([...seen((s) => s.shapes.map((x) => x.shape))].sort()).toEqual([...SHAPE_NAMES].sort());
    expect([...seen((s) => s.shapes.map((x) => x.size))].sort()).toEqual(['large', 'small']);
    expect([...seen((s) => [(s.layout as { groups: number[] }).groups.join('+')])].sort()).toEqual([
      '1+1',
      '1+1+1',
      '2',
      '2+1',
      '3',
    ]);
  });

  it('gives five different captions that are true of the picture: counts match the shapes, relations the geometry', () => {
    let withRelation = 0;
    let withCount = 0;
    for (const s of multi) {
      const caps = captionsFor(s, 7);
      expect(caps).toHaveLength(CAPTIONS_PER_IMAGE);
      expect(new Set(caps).size).toBe(CAPTIONS_PER_IMAGE);
      expect(captionsFor(s, 7)).toEqual(caps);
      const checks = caps.map((c) => checkTrue(c, s));
      if (checks.some((x) => x.relation)) withRelation++;
      if (checks.some((x) => x.count)) withCount++;
    }
    // most pictures get a relation and a count among their five captions
    expect(withRelation / multi.length).toBeGreaterThan(0.6);
    expect(withCount / multi.length).toBeGreaterThan(0.9);
  });

  it('the truth check catches false captions', () => {
    const s = multi.find(
      (x) => x.layout.kind === 'multi' && x.layout.groups.join() === '1,1' && leftOf(x.shapes[0], x.shapes[1]),
    )!;
    const [a, b] = s.shapes;
    expect(() => checkTrue(`${nounPhrase(b, false)} to the left of ${nounPhrase(a, false)}`, s)).toThrow();
    expect(() => checkTrue(`two ${a.colour} ${a.shape}s`, s)).toThrow();
    expect(() => checkTrue(`${nounPhrase(a, false)} to the left of ${nounPhrase(b, false)}`, s)).not.toThrow();
  });

  it('uses a small vocabulary, correct articles, and short captions', () => {
    const vocab = new Set(demoVocabulary('multi'));
    expect(vocab.size).toBeLessThanOrEqual(50);
    const seen = new Set<string>();
    let longest = 0;
    for (const s of multi) {
      for (const c of captionsFor(s, 3)) {
        expect(c).toMatch(/^[a-z]+( [a-z]+)*$/);
        expect(c).not.toMatch(/\ba [aeiou]|\ban [^aeiou ]/);
        words(c).forEach((x) => seen.add(x));
        longest = Math.max(longest, words(c).length);
      }
    }
    expect([...seen].sort()).toEqual([...vocab].sort());
    expect(longest).toBeLessThanOrEqual(15);
  });
});
