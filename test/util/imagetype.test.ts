import { describe, expect, it } from 'vitest';
import { sniffImage } from '../../src/util/imagetype.js';
import { BLUE, bmp, solid } from '../serve/fixtures.js';

describe('sniffImage', () => {
  for (const format of ['png', 'jpeg', 'webp', 'gif', 'tiff', 'avif'] as const) {
    it(`recognises ${format} written by sharp`, async () => {
      expect(sniffImage(await solid(BLUE, format, 8))).toBe(format);
    });
  }

  it('recognises HEIF brands and BMP', () => {
    const ftyp = (brand: string, compat: string[] = []) => {
      const b = Buffer.alloc(16 + 4 * compat.length);
      b.writeUInt32BE(b.length, 0);
      b.write('ftyp', 4, 'latin1');
      b.write(brand, 8, 'latin1');
      compat.forEach((c, i) => b.write(c, 16 + 4 * i, 'latin1'));
      return b;
    };
    expect(sniffImage(ftyp('heic'))).toBe('heif');
    expect(sniffImage(ftyp('mif1', ['heic']))).toBe('heif');
    expect(sniffImage(ftyp('mif1', ['avif']))).toBe('avif');
    expect(sniffImage(ftyp('isom', ['mp41']))).toBeNull(); // an MP4 video
    expect(sniffImage(bmp())).toBe('bmp');
    expect(sniffImage(Buffer.from('II*\0rest', 'latin1'))).toBe('tiff');
    expect(sniffImage(Buffer.from('MM\0*rest', 'latin1'))).toBe('tiff');
  });

  it('refuses non-images, including look-alikes', () => {
    for (const s of [
      '',
      'abc',
      'hello world, this is text',
      'BM is not enough to be a bitmap',
      '%PDF-1.7\n...',
      '<svg xmlns="http://www.w3.org/2000/svg"/>',
      'RIFF\0\0\0\0WAVEfmt ',
      'GIF88a......',
    ]) {
      expect(sniffImage(Buffer.from(s, 'latin1')), s).toBeNull();
    }
    expect(sniffImage(Buffer.from([0xff, 0xd8]))).toBeNull(); // truncated JPEG marker
    expect(sniffImage(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a]))).toBeNull();
  });
});
