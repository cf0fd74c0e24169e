import { describe, expect, it } from 'vitest';
import {
  CAPTIONS_PER_IMAGE,
  COLOUR_NAMES,
  SHAPE_NAMES,
  captionsFor,
  demoTexts,
  demoVocabulary,
  imageName,
  makeScene,
  nounPhrase,
  sceneSeed,
  sceneSvg,
  splitNames,
  type DemoScene,
} from '../../src/prep/demo-scene.js';
import { nearestColour } from './demo-colours.js';

const SEEDS = [0, 1, 7, 12345];
const scenes: DemoScene[] = [];
for (const seed of SEEDS) for (let i = 0; i < 750; i++) scenes.push(makeScene(seed, i));
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
        const where = { left: cx < 0.35, right: cx > 0.65, top: cy < 0.35, bottom: cy > 0.65, center: Math.abs(cx - 0.5) < 0.05 && Math.abs(cy - 0.5) < 0.05 };
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
    near(count((s) => s.shapes.map((x) => x.colour)), COLOUR_NAMES);
    near(count((s) => s.shapes.map((x) => x.shape)), SHAPE_NAMES);
    near(count((s) => s.shapes.map((x) => x.size)), ['small', 'large']);
    near(count((s) => [s.layout.kind]), ['single', 'pair']);
    near(count((s) => (s.layout.kind === 'single' ? [s.layout.position] : [])), ['left', 'right', 'top', 'bottom', 'center'], 0.2);
    near(count((s) => [s.background.kind]), ['plain', 'gradient', 'noise'], 0.4);
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
          const target = s.shapes.find((x) => x.shape === shapeWord && (c.includes('that is') || x.colour === colourAfter))!;
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

  it('is byte-identical for the same seed; a smaller dataset is a prefix of a larger one', () => {
    expect(demoTexts(4, 50)).toEqual(demoTexts(4, 50));
    expect(demoTexts(5, 50).captions).not.toBe(demoTexts(4, 50).captions);
    expect(demoTexts(4, 50).captions.startsWith(demoTexts(4, 10).captions)).toBe(true);
  });
});
