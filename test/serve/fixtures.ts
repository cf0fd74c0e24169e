// Small images for the serve tests, rendered with sharp (solid colours, so the fake captioner's answer is known).
import sharp from 'sharp';
import type { ServeConfig } from '../../src/config/schema.js';
import { ServeSchema } from '../../src/config/schema.js';

export type Rgb = { r: number; g: number; b: number };

/**
 * A solid-colour image. The bytes are copied into a Buffer over a plain ArrayBuffer (what fetch's body
 * and Blob accept; sharp's own Buffer may sit on any ArrayBufferLike).
 */
export async function solid(
  colour: Rgb,
  format: 'png' | 'jpeg' | 'webp' | 'gif' | 'tiff' | 'avif' | 'heif',
  size = 32,
): Promise<Buffer<ArrayBuffer>> {
  return Buffer.from(await encodeSolid(colour, format, size));
}

function encodeSolid(
  colour: Rgb,
  format: 'png' | 'jpeg' | 'webp' | 'gif' | 'tiff' | 'avif' | 'heif',
  size: number,
): Promise<Buffer> {
  const img = sharp({ create: { width: size, height: size, channels: 3, background: colour } });
  switch (format) {
    case 'png':
      return img.png().toBuffer();
    case 'jpeg':
      return img.jpeg().toBuffer();
    case 'webp':
      return img.webp().toBuffer();
    case 'gif':
      return img.gif().toBuffer();
    case 'tiff':
      return img.tiff().toBuffer();
    case 'avif':
      return img.avif().toBuffer();
    case 'heif':
      return img.heif({ compression: 'av1' }).toBuffer();
  }
}

/** A minimal 2x2 24-bit BMP (sharp cannot write BMP). */
export function bmp(): Buffer {
  const w = 2,
    h = 2,
    row = 8; // 2 px * 3 bytes, padded to 4
  const size = 54 + row * h;
  const b = Buffer.alloc(size);
  b.write('BM', 0, 'latin1');
  b.writeUInt32LE(size, 2);
  b.writeUInt32LE(54, 10);
  b.writeUInt32LE(40, 14);
  b.writeInt32LE(w, 18);
  b.writeInt32LE(h, 22);
  b.writeUInt16LE(1, 26);
  b.writeUInt16LE(24, 28);
  b.writeUInt32LE(row * h, 34);
  return b;
}

export const RED = { r: 230, g: 20, b: 20 };
export const BLUE = { r: 20, g: 50, b: 230 };
export const GREEN = { r: 30, g: 170, b: 50 };

export function serveConfig(over: Partial<ServeConfig> = {}): ServeConfig {
  return { ...ServeSchema.parse({}), host: '127.0.0.1', port: 0, ...over };
}
