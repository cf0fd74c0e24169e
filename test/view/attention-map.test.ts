// The attention-map PNG: exact bilinear upsampling on tiny grids, the layout, where the light falls,
// EXIF orientation, escaping of words, determinism and the errors for bad input.
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import {
  attentionMapLayout,
  displayMap,
  gaussianBlur,
  normaliseRow,
  renderAttentionMap,
  upsample,
} from '../../src/view/attention-map.js';
import { ModelError } from '../../src/errors.js';
import { ImageError } from '../../src/features/image.js';

/** A flat grey photo, `w` x `h`, as JPEG (or PNG for exact pixels). */
function grey(w: number, h: number, format: 'png' | 'jpeg' = 'png', value = 200): Promise<Buffer> {
  const img = sharp({ create: { width: w, height: h, channels: 3, background: { r: value, g: value, b: value } } });
  return (format === 'png' ? img.png() : img.jpeg()).toBuffer();
}

async function raw(png: Buffer) {
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  return { data, info, at: (x: number, y: number) => data[(y * info.width + x) * info.channels] };
}

describe('upsample (bilinear, half-pixel centres)', () => {
  it('1x2 -> 1x4 interpolates between the centres and clamps at the edges', () => {
    expect(Array.from(upsample([0, 1], [1, 2], [1, 4]))).toEqual([0, 0.25, 0.75, 1]);
  });
  it('2x2 -> 4x4 exactly', () => {
    const out = upsample([0, 4, 8, 12], [2, 2], [4, 4]);
    // along x: [a, .75a+.25b, .25a+.75b, b]; the same along y
    expect(Array.from(out)).toEqual([0, 1, 3, 4, 2, 3, 5, 6, 6, 7, 9, 10, 8, 9, 11, 12]);
  });
  it('identity at the same size, and a constant stays constant', () => {
    const row = [1, 2, 3, 4, 5, 6];
    expect(Array.from(upsample(row, [2, 3], [2, 3]))).toEqual(row);
    expect(Array.from(upsample([7, 7, 7, 7], [2, 2], [3, 5])).every((v) => v === 7)).toBe(true);
  });
  it('non-square output (1x1 -> 2x3) and a wrong row length', () => {
    expect(Array.from(upsample([5], [1, 1], [2, 3]))).toEqual([5, 5, 5, 5, 5, 5]);
    expect(() => upsample([1, 2, 3], [2, 2], [4, 4])).toThrow(RangeError);
  });
});

describe('display maps', () => {
  it('normaliseRow: max -> 1, negatives and non-finite -> 0, all-zero stays zero', () => {
    expect(Array.from(normaliseRow([0, 2, 4, -1, NaN, Infinity]))).toEqual([0, 0.5, 1, 0, 0, 0]);
    expect(Array.from(normaliseRow([0, 0]))).toEqual([0, 0]);
  });
  it('gaussianBlur keeps the total of a spike and spreads it symmetrically', () => {
    const m = new Float32Array(9 * 9);
    m[4 * 9 + 4] = 1;
    gaussianBlur(m, 9, 9, 1);
    expect(m.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    expect(m[4 * 9 + 3]).toBeCloseTo(m[4 * 9 + 5], 7);
    expect(m[3 * 9 + 4]).toBeCloseTo(m[4 * 9 + 3], 7);
    expect(m[4 * 9 + 4]).toBeGreaterThan(m[4 * 9 + 3]);
  });
  it('displayMap peaks (at 1) over the attended cell', () => {
    const row = new Float32Array(4);
    row[3] = 0.9; // bottom-right of a 2x2 grid
    const m = displayMap(row, [2, 2], { width: 40, height: 20 });
    expect(Math.max(...m)).toBeCloseTo(1, 6);
    expect(m[19 * 40 + 39]).toBeGreaterThan(0.9);
    expect(m[0]).toBeLessThan(0.2);
  });
});

describe('layout', () => {
  it('keeps the photo aspect inside the cell, wraps panels into columns', () => {
    const l = attentionMapLayout({ width: 640, height: 480 }, 6, { cell: 224, columns: 4 });
    expect(l.panel).toEqual({ width: 224, height: 168 });
    expect([l.columns, l.rows]).toEqual([4, 2]);
    expect(l.width).toBe(l.gap + 4 * (224 + l.gap));
    expect(l.height).toBe(l.gap + 2 * (168 + l.label + l.gap));
  });
  it('few words: one row; a very thin photo still gets a visible panel', () => {
    expect(attentionMapLayout({ width: 100, height: 100 }, 2).columns).toBe(3);
    expect(attentionMapLayout({ width: 10000, height: 10 }, 1).panel).toEqual({ width: 224, height: 56 });
    expect(() => attentionMapLayout({ width: 10, height: 10 }, 1, { cell: 8 })).toThrow(RangeError);
    expect(() => attentionMapLayout({ width: 10, height: 10 }, 1, { cell: 5000 })).toThrow(/32..1024/);
  });
});

describe('renderAttentionMap', () => {
  it('draws the photo, then each word lit where it looked, darker elsewhere', async () => {
    const image = await grey(64, 64);
    // 2x2 grid: "left" looks at the top-left cell, "right" at the bottom-right
    const png = await renderAttentionMap({
      image,
      words: ['left', 'right'],
      attention: [
        [1, 0, 0, 0],
        [0, 0, 0, 1],
      ],
      grid: [2, 2],
      cell: 64,
    });
    const l = attentionMapLayout({ width: 64, height: 64 }, 2, { cell: 64 });
    const { info, at } = await raw(png);
    expect([info.width, info.height]).toEqual([l.width, l.height]);
    const px = (k: number, x: number, y: number) => at(l.gap + k * (l.panel.width + l.gap) + x, l.gap + y);
    expect(px(0, 5, 5)).toBe(200); // the photo itself, untouched
    expect(px(0, 58, 58)).toBe(200);
    expect(px(1, 5, 5)).toBeGreaterThan(170); // "left": top-left lit
    expect(px(1, 58, 58)).toBeLessThan(70); // bottom-right dark (floor 0.25 of 200)
    expect(px(2, 5, 5)).toBeLessThan(70);
    expect(px(2, 58, 58)).toBeGreaterThan(170);
    // the words are written under their panels: dark pixels in the label strips, none under the photo
    const labelDark = async (k: number) => {
      let n = 0;
      for (let y = 0; y < l.label; y++)
        for (let x = 0; x < l.panel.width; x++) if (px(k, x, l.panel.height + y) < 128) n++;
      return n;
    };
    expect(await labelDark(0)).toBe(0);
    expect(await labelDark(1)).toBeGreaterThan(10);
    expect(await labelDark(2)).toBeGreaterThan(10);
  });

  it('is deterministic', async () => {
    const image = await grey(50, 30, 'jpeg');
    const input = {
      image,
      words: ['a', 'b'],
      attention: [new Float32Array([0.1, 0.7, 0.2, 0]), new Float32Array([0.25, 0.25, 0.25, 0.25])],
      grid: [2, 2] as [number, number],
    };
    const a = await renderAttentionMap(input);
    const b = await renderAttentionMap(input);
    expect(Buffer.compare(a, b)).toBe(0);
  });

  it('applies EXIF orientation (a landscape JPEG tagged "rotate 90" is shown portrait)', async () => {
    const image = await sharp(await grey(80, 40, 'jpeg'))
      .withMetadata({ orientation: 6 })
      .jpeg()
      .toBuffer();
    const png = await renderAttentionMap({ image, words: ['x'], attention: [[1]], grid: [1, 1], cell: 64, columns: 1 });
    const l = attentionMapLayout({ width: 40, height: 80 }, 1, { cell: 64, columns: 1 });
    expect(l.panel).toEqual({ width: 32, height: 64 });
    const meta = await sharp(png).metadata();
    expect([meta.width, meta.height]).toEqual([l.width, l.height]);
  });

  it('escapes words for the SVG text (markup, quotes, ampersands, control characters)', async () => {
    const image = await grey(32, 32);
    const words = ['<unk>', 'a&b', '"quoted"', "it's", '</text><script>', 'bell\u0007', '\uD800lone'];
    const png = await renderAttentionMap({ image, words, attention: words.map(() => [1]), grid: [1, 1], cell: 48 });
    expect((await sharp(png).metadata()).format).toBe('png');
  });

  it('zero, negative or NaN attention rows darken the whole panel instead of failing', async () => {
    const image = await grey(32, 32);
    const png = await renderAttentionMap({
      image,
      words: ['z'],
      attention: [[0, -1, NaN, 0]],
      grid: [2, 2],
      cell: 32,
      columns: 2,
    });
    const l = attentionMapLayout({ width: 32, height: 32 }, 1, { cell: 32 });
    const { at } = await raw(png);
    expect(at(l.gap + l.panel.width + l.gap + 10, l.gap + 10)).toBe(50); // 200 * 0.25
  });

  it('refuses rows that do not match the words or the grid, and unreadable photos', async () => {
    const image = await grey(16, 16);
    await expect(renderAttentionMap({ image, words: ['a', 'b'], attention: [[1]], grid: [1, 1] })).rejects.toThrow(
      ModelError,
    );
    await expect(renderAttentionMap({ image, words: ['a'], attention: [[1, 2, 3]], grid: [2, 2] })).rejects.toThrow(
      /row 0 \("a"\) has 3 weights, grid 2x2 needs 4/,
    );
    await expect(renderAttentionMap({ image, words: ['a'], attention: [[1]], grid: [0, 1] })).rejects.toThrow(
      ModelError,
    );
    await expect(
      renderAttentionMap({ image: Buffer.from('not an image'), words: [], attention: [], grid: [1, 1] }),
    ).rejects.toThrow(ImageError);
    await expect(
      renderAttentionMap({ image: Buffer.alloc(0), words: [], attention: [], grid: [1, 1] }),
    ).rejects.toThrow(/empty/);
  });

  it('a caption with no words gives the photo alone', async () => {
    const png = await renderAttentionMap({
      image: await grey(20, 10),
      words: [],
      attention: [],
      grid: [14, 14],
      cell: 40,
    });
    const l = attentionMapLayout({ width: 20, height: 10 }, 0, { cell: 40 });
    expect((await sharp(png).metadata()).width).toBe(l.width);
    expect(l.columns).toBe(1);
  });
});
