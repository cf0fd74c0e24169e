// Image type detection by magic bytes (never by file name or the client's Content-Type).
// Pure: bytes in, a format name (or null) out. The server answers 415 for non-images with it, and caption
// recognises image files by content with it.

export type ImageFormat = 'jpeg' | 'png' | 'gif' | 'webp' | 'tiff' | 'avif' | 'heif' | 'bmp';

const ascii = (b: Uint8Array, start: number, end: number): string => {
  let s = '';
  for (let i = start; i < end && i < b.length; i++) s += String.fromCharCode(b[i]);
  return s;
};

const AVIF_BRANDS = new Set(['avif', 'avis']);
const HEIF_BRANDS = new Set(['heic', 'heix', 'hevc', 'hevx', 'heim', 'heis', 'mif1', 'msf1']);
/** BITMAPINFOHEADER sizes of the BMP variants (core, v1..v5 and OS/2 2.x). */
const BMP_DIB_SIZES = new Set([12, 16, 40, 52, 56, 64, 108, 124]);

/** The image format of `b` from its first bytes, or null when it is not an image we accept. */
export function sniffImage(b: Uint8Array): ImageFormat | null {
  if (b.length < 4) return null;
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  if (
    b.length >= 8 &&
    b[0] === 0x89 &&
    ascii(b, 1, 4) === 'PNG' &&
    b[4] === 0x0d &&
    b[5] === 0x0a &&
    b[6] === 0x1a &&
    b[7] === 0x0a
  )
    return 'png';
  const head6 = ascii(b, 0, 6);
  if (head6 === 'GIF87a' || head6 === 'GIF89a') return 'gif';
  if (b.length >= 12 && ascii(b, 0, 4) === 'RIFF' && ascii(b, 8, 12) === 'WEBP') return 'webp';
  // TIFF: little/big endian, classic (42) or BigTIFF (43)
  if (
    (b[0] === 0x49 && b[1] === 0x49 && (b[2] === 42 || b[2] === 43) && b[3] === 0) ||
    (b[0] === 0x4d && b[1] === 0x4d && b[2] === 0 && (b[3] === 42 || b[3] === 43))
  )
    return 'tiff';
  // ISO-BMFF: [size:4]['ftyp'][major brand:4][minor:4][compatible brands:4*n]
  if (b.length >= 12 && ascii(b, 4, 8) === 'ftyp') {
    const boxSize = ((b[0] << 24) >>> 0) + (b[1] << 16) + (b[2] << 8) + b[3];
    const end = Math.min(b.length, Math.max(16, boxSize));
    const brands = [ascii(b, 8, 12)];
    for (let i = 16; i + 4 <= end; i += 4) brands.push(ascii(b, i, i + 4));
    if (brands.some((x) => AVIF_BRANDS.has(x))) return 'avif';
    if (brands.some((x) => HEIF_BRANDS.has(x))) return 'heif';
    return null;
  }
  // BMP: 'BM' alone is too weak (plenty of text starts with it), so check the DIB header size too
  if (b.length >= 18 && b[0] === 0x42 && b[1] === 0x4d) {
    const dib = b[14] + (b[15] << 8) + (b[16] << 16) + ((b[17] << 24) >>> 0);
    if (BMP_DIB_SIZES.has(dib)) return 'bmp';
  }
  return null;
}
