// decodeImage: every awkward input becomes 224x224 RGB or a typed, explained ImageError.
import { promises as fs, readdirSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { decodeImage, imageHeader, ImageError } from '../../src/features/image.js';
import { announceSkip, hasShared, sharedData } from '../helpers/shared.js';
import { encodeImage } from './helpers.js';

const S = 224;
const px = (img: Uint8Array, x: number, y: number, size = S) =>
  Array.from(img.subarray((y * size + x) * 3, (y * size + x) * 3 + 3));

async function expectImageError(p: Promise<unknown>, kind: string, reason: RegExp): Promise<ImageError> {
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(ImageError);
  const ie = e as ImageError;
  expect(ie.kind).toBe(kind);
  expect(ie.reason).toMatch(reason);
  expect(ie.reason).not.toMatch(/\n/);
  return ie;
}

describe('decodeImage on generated fixtures', () => {
  it('resizes to exactly size x size ignoring the aspect ratio (like Keras load_img)', async () => {
    const w = 30;
    const h = 10;
    const raw = new Uint8Array(w * h * 3);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw[(y * w + x) * 3] = x < w / 2 ? 255 : 0;
    for (const interpolation of ['nearest', 'bilinear', 'bicubic', 'lanczos3'] as const) {
      const img = await decodeImage(await encodeImage(raw, w, h, 3), { size: S, interpolation });
      expect(img.length).toBe(S * S * 3);
      expect(px(img, 5, 5)[0]).toBeGreaterThan(240);
      expect(px(img, S - 5, S - 5)[0]).toBeLessThan(15);
    }
  });

  it('resize shorter: the shorter side to resizeSize, aspect ratio kept, then the centre size x size crop', async () => {
    // 60x20: three 20-pixel columns, red | green | blue; a wide one (left, right) and a tall one (top, bottom)
    const w = 60;
    const h = 20;
    const raw = new Uint8Array(w * h * 3);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw[(y * w + x) * 3 + Math.floor(x / 20)] = 255;
    const wide = await encodeImage(raw, w, h, 3);
    // shorter side 20 -> 16: 48x16, centre crop 16x16 = the green column
    for (const interpolation of ['nearest', 'bilinear'] as const) {
      const img = await decodeImage(wide, { size: 16, resize: 'shorter', interpolation });
      expect(img.length).toBe(16 * 16 * 3);
      for (const [x, y] of [
        [1, 1],
        [14, 14],
        [8, 8],
      ])
        expect(px(img, x, y, 16)).toEqual([0, 255, 0]);
    }
    // shorter side 20 -> 32 (resizeSize), 96x32, centre 16x16 crop: still inside the green column
    const big = await decodeImage(wide, { size: 16, resize: 'shorter', resizeSize: 32 });
    expect(px(big, 0, 0, 16)).toEqual([0, 255, 0]);
    // stretch (fill) keeps all three columns
    const fill = await decodeImage(wide, { size: 15, resize: 'fill' });
    expect(px(fill, 1, 7, 15)).toEqual([255, 0, 0]);
    expect(px(fill, 13, 7, 15)).toEqual([0, 0, 255]);
    // a tall image is cropped top and bottom
    const tall = await sharp(wide).rotate(90).png().toBuffer();
    const t = await decodeImage(tall, { size: 16, resize: 'shorter' });
    expect(px(t, 8, 1, 16)).toEqual([0, 255, 0]);
    expect(px(t, 8, 14, 16)).toEqual([0, 255, 0]);
  });

  it('applies EXIF orientation (6 = rotate 90 degrees clockwise)', async () => {
    const w = 40;
    const h = 20;
    const raw = new Uint8Array(w * h * 3);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw[(y * w + x) * 3 + (x < w / 2 ? 0 : 2)] = 255; // left red, right blue
    const jpg = await sharp(Buffer.from(raw), { raw: { width: w, height: h, channels: 3 } })
      .jpeg({ quality: 100 })
      .withMetadata({ orientation: 6 })
      .toBuffer();
    expect((await sharp(jpg).metadata()).orientation).toBe(6);
    const img = await decodeImage(jpg, { size: S });
    // upright: the left half became the top half
    const top = px(img, S / 2, 10);
    const bottom = px(img, S / 2, S - 10);
    expect(top[0]).toBeGreaterThan(200);
    expect(top[2]).toBeLessThan(60);
    expect(bottom[2]).toBeGreaterThan(200);
    expect(bottom[0]).toBeLessThan(60);
  });

  it('turns greyscale into three equal channels', async () => {
    const raw = new Uint8Array(16 * 16).map((_, i) => i);
    const img = await decodeImage(await encodeImage(raw, 16, 16, 1), { size: S });
    for (const [x, y] of [
      [0, 0],
      [100, 100],
      [223, 223],
    ]) {
      const [r, g, b] = px(img, x, y);
      expect(r).toBe(g);
      expect(g).toBe(b);
    }
    expect(px(img, 223, 223)[0]).toBe(255);
  });

  it('flattens alpha onto white (grey+alpha and RGBA)', async () => {
    const ga = new Uint8Array(8 * 8 * 2);
    for (let i = 0; i < 64; i++) {
      ga[2 * i] = 0; // black
      ga[2 * i + 1] = i < 32 ? 0 : 255; // top half transparent
    }
    const img = await decodeImage(await encodeImage(ga, 8, 8, 2), { size: S });
    expect(px(img, 100, 10)).toEqual([255, 255, 255]);
    expect(px(img, 100, 200)).toEqual([0, 0, 0]);
    const rgba = new Uint8Array(4 * 4 * 4).fill(0); // fully transparent black
    const img2 = await decodeImage(await encodeImage(rgba, 4, 4, 4), { size: S });
    expect(img2.every((v) => v === 255)).toBe(true);
  });

  it('reads 16-bit PNGs as 8-bit', async () => {
    const raw = new Uint8Array(8 * 8 * 3).fill(200);
    const png16 = await sharp(Buffer.from(raw), { raw: { width: 8, height: 8, channels: 3 } })
      .toColourspace('rgb16')
      .png()
      .toBuffer();
    expect((await sharp(png16).metadata()).depth).toBe('ushort');
    const img = await decodeImage(png16, { size: S });
    expect(Math.abs(px(img, 50, 50)[0] - 200)).toBeLessThanOrEqual(1);
  });

  it('takes the first frame of an animation', async () => {
    const w = 4;
    const h = 4;
    const frames = new Uint8Array(w * h * 2 * 4);
    for (let i = 0; i < w * h * 2; i++) {
      frames[i * 4 + (i < w * h ? 0 : 2)] = 255; // frame 1 red, frame 2 blue
      frames[i * 4 + 3] = 255;
    }
    const gif = await sharp(Buffer.from(frames), { raw: { width: w, height: h * 2, channels: 4, pageHeight: h } })
      .gif()
      .toBuffer();
    expect((await sharp(gif).metadata()).pages).toBe(2);
    const img = await decodeImage(gif, { size: S });
    const [r, , b] = px(img, 100, 100);
    expect(r).toBeGreaterThan(200);
    expect(b).toBeLessThan(60);
  });

  it('refuses images over maxPixels as too_large', async () => {
    const raw = new Uint8Array(100 * 100 * 3);
    await expectImageError(
      decodeImage(await encodeImage(raw, 100, 100, 3), { size: S, maxPixels: 9999 }),
      'too_large',
      /more than 9999 pixels/,
    );
    expect((await decodeImage(await encodeImage(raw, 100, 100, 3), { size: S, maxPixels: 10000 })).length).toBe(
      S * S * 3,
    );
  });

  it('explains files that are not images, empty, truncated or missing', async () => {
    await expectImageError(
      decodeImage(new TextEncoder().encode('hello, this is text'), { size: S }),
      'unsupported',
      /not an image format/,
    );
    await expectImageError(decodeImage(new Uint8Array(0), { size: S }), 'corrupt', /empty/);
    const jpg = await encodeImage(
      new Uint8Array(64 * 64 * 3).map((_, i) => i * 7),
      64,
      64,
      3,
      'jpeg',
    );
    await expectImageError(
      decodeImage(jpg.subarray(0, Math.floor(jpg.length / 2)), { size: S }),
      'corrupt',
      /damaged or truncated/,
    );
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'cap-img-'));
    try {
      const e = await expectImageError(
        decodeImage(path.join(dir, 'nope.jpg'), { size: S }),
        'corrupt',
        /file not found/,
      );
      expect(e.message).toContain('nope.jpg');
      await fs.writeFile(path.join(dir, 'empty.jpg'), '');
      await expectImageError(decodeImage(path.join(dir, 'empty.jpg'), { size: S }), 'corrupt', /empty file/);
      await fs.mkdir(path.join(dir, 'folder.jpg'));
      await expectImageError(decodeImage(path.join(dir, 'folder.jpg'), { size: S }), 'unsupported', /is a folder/);
      await fs.writeFile(path.join(dir, 'text.png'), 'just text');
      await expectImageError(
        decodeImage(path.join(dir, 'text.png'), { size: S }),
        'unsupported',
        /not an image format/,
      );
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('a file cut inside its header', () => {
  it('is damaged (corrupt), not "not an image", when it starts as a format we read: bytes, files and headers', async () => {
    const tiff = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#804020' } })
      .tiff()
      .toBuffer();
    const cut = tiff.subarray(0, tiff.readUInt32LE(4) + 4); // inside its first directory (IFD)
    await expectImageError(decodeImage(cut, { size: S }), 'corrupt', /^damaged or truncated TIFF image/);
    await expectImageError(imageHeader(cut), 'corrupt', /^damaged or truncated TIFF image/);
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'cap-img-'));
    try {
      await fs.writeFile(path.join(dir, 'cut.tif'), cut);
      await expectImageError(
        decodeImage(path.join(dir, 'cut.tif'), { size: S }),
        'corrupt',
        /^damaged or truncated TIFF image/,
      );
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
    // text is still "not an image"
    await expectImageError(
      imageHeader(new TextEncoder().encode('hello, this is text')),
      'unsupported',
      /not an image format/,
    );
  });

  it('imageHeader gives the format and size without decoding', async () => {
    const png = await sharp({ create: { width: 3000, height: 2000, channels: 3, background: '#336699' } })
      .png()
      .toBuffer();
    expect(await imageHeader(png)).toEqual({ format: 'png', width: 3000, height: 2000 });
    await expectImageError(imageHeader(new Uint8Array(0)), 'corrupt', /empty/);
  });
});

describe('decodeImage on the shared odd images', () => {
  announceSkip('odd image decoding');
  const dir = path.join(sharedData, 'images', 'odd');
  // Known outcome per file: everything decodes except the two damaged JPEGs.
  const bad: Record<string, RegExp> = {
    'sharp_truncated.jpg': /damaged or truncated image \(VipsJpeg: premature end of JPEG image\)$/,
    'sharp_corrupt-header.jpg':
      /corrupt image header \(VipsJpeg: premature end of JPEG image; VipsJpeg: JPEG datastream contains no image\)$/,
  };
  it.skipIf(!hasShared)('decodes each file to 224x224x3 or fails with a clear one-line reason', async () => {
    const files = readdirSync(dir).sort();
    expect(files.length).toBeGreaterThanOrEqual(21);
    const outcomes: Record<string, string> = {};
    for (const f of files) {
      try {
        const img = await decodeImage(path.join(dir, f), { size: S, interpolation: 'bilinear' });
        expect(img.length).toBe(S * S * 3);
        outcomes[f] = 'ok';
      } catch (e) {
        expect(e, f).toBeInstanceOf(ImageError);
        outcomes[f] = `${(e as ImageError).kind}: ${(e as ImageError).reason}`;
        expect(outcomes[f]).not.toMatch(/\n/);
      }
    }
    for (const f of files) {
      if (bad[f]) expect(outcomes[f], f).toMatch(new RegExp('^corrupt: ' + bad[f].source));
      else expect(outcomes[f], f).toBe('ok');
    }
  });
  it.skipIf(!hasShared)(
    'makes EXIF-rotated photos upright (Landscape_6/8 come out landscape-shaped content)',
    async () => {
      // both files hold the same landscape picture stored rotated; after orientation they must agree
      const a = await decodeImage(path.join(dir, 'sharp_Landscape_6.jpg'), { size: 64, interpolation: 'bilinear' });
      const b = await decodeImage(path.join(dir, 'sharp_Landscape_8.jpg'), { size: 64, interpolation: 'bilinear' });
      let diff = 0;
      for (let i = 0; i < a.length; i++) diff += Math.abs(a[i] - b[i]);
      expect(diff / a.length).toBeLessThan(12);
    },
  );
});
