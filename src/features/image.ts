// Image decoding for the encoders: any file sharp reads (JPEG, PNG, WebP, GIF, TIFF, AVIF, ...) becomes
// exactly size x size x 3 RGB bytes, or a typed ImageError saying why not (unsupported / corrupt / too_large).
//
// What happens to awkward inputs, in order:
//  - EXIF orientation is applied (`.rotate()` with no angle), so a phone portrait is upright;
//  - only the first frame of an animation (GIF, WebP) or the first page of a TIFF is read;
//  - images with an alpha channel are flattened onto WHITE (a transparent PNG logo becomes a logo on
//    white, as most viewers show it; Keras load_img would instead drop alpha and keep whatever colour the
//    transparent pixels carry);
//  - CMYK, greyscale, 16-bit and palette images are converted to 8-bit sRGB;
//  - truncated or otherwise damaged files are refused (sharp's failOn 'warning'), never half-decoded;
//  - images with more than `maxPixels` pixels are refused before decoding (decompression bombs).
// Two resize modes:
//  - 'fill' ignores the aspect ratio, which is what Keras `load_img(path, target_size=(224, 224))` does
//    (VGG16; Keras's default interpolation is 'nearest', hence VGG16's default);
//  - 'shorter' resizes the shorter side to `resizeSize` (aspect ratio kept) and cuts out the centre
//    size x size square: torchvision's Resize(resizeSize) + CenterCrop(size), as ResNet and CLIP expect.
// sharp's kernels pick slightly different source pixels than PIL's, so features differ a little from a
// Python pipeline.
import { promises as fs } from 'node:fs';
import sharp, { type Metadata } from 'sharp';
import { DataError } from '../errors.js';
import { sniffImage, type ImageFormat } from '../util/imagetype.js';

export type Interpolation = 'nearest' | 'bilinear' | 'bicubic' | 'lanczos3';

export interface DecodeOptions {
  /** Output side in pixels (square). */
  size: number;
  /** Resize kernel; Keras load_img uses nearest. */
  interpolation?: Interpolation;
  /** fill (default): stretch to size x size; shorter: shorter side to resizeSize, then the centre size x size crop. */
  resize?: 'fill' | 'shorter';
  /** resize 'shorter': the shorter side before the crop (default and minimum: size). */
  resizeSize?: number;
  /** Refuse images with more pixels than this (width x height of the first frame). */
  maxPixels?: number;
}

/** Why an image could not be used: maps to exit codes and HTTP statuses (see caption/types.ts, serve). */
export type ImageErrorKind = 'unsupported' | 'corrupt' | 'too_large';

/** An image that cannot be used, with a kind (for exit codes / HTTP statuses) and a human reason. */
export class ImageError extends DataError {
  readonly kind: ImageErrorKind;
  readonly reason: string;
  constructor(kind: ImageErrorKind, reason: string, where?: string) {
    super(where ? `${where}: ${reason}` : reason);
    this.kind = kind;
    this.reason = reason;
  }
}

const KERNELS: Record<Interpolation, 'nearest' | 'linear' | 'cubic' | 'lanczos3'> = {
  nearest: 'nearest',
  bilinear: 'linear',
  bicubic: 'cubic',
  lanczos3: 'lanczos3',
};

/** Default pixel limit, matching caption.maxPixels's default. */
export const DEFAULT_MAX_PIXELS = 100_000_000;

/**
 * Decode an encoded image (bytes, or a file path) into size*size*3 RGB bytes, row-major, channels last.
 * Throws ImageError for anything that is not a usable image.
 */
export async function decodeImage(input: Uint8Array | string, opts: DecodeOptions): Promise<Uint8Array> {
  const where = typeof input === 'string' ? input : undefined;
  if (typeof input !== 'string' && input.length === 0) throw new ImageError('corrupt', 'empty file (0 bytes)', where);
  const { size } = opts;
  const maxPixels = opts.maxPixels ?? DEFAULT_MAX_PIXELS;
  const shorter = opts.resize === 'shorter';
  const side = shorter ? Math.max(size, opts.resizeSize ?? size) : size;
  try {
    // No await before toBuffer(): the whole decode (file read included, for paths) is queued to libuv's
    // thread pool at once, so it proceeds while the main thread is busy running the encoder.
    const { data, info } = await sharp(input, { limitInputPixels: maxPixels, failOn: 'warning', pages: 1, page: 0 })
      .rotate() // EXIF orientation
      .flatten({ background: '#ffffff' })
      .toColourspace('srgb')
      // 'outside': the smallest size covering side x side with the aspect ratio kept, i.e. shorter side = side
      .resize(side, side, { fit: shorter ? 'outside' : 'fill', kernel: KERNELS[opts.interpolation ?? 'nearest'] })
      .removeAlpha()
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    const { width: w, height: h, channels } = info;
    const ok = shorter ? Math.min(w, h) === side : w === size && h === size;
    if (!ok)
      throw new ImageError(
        'corrupt',
        `decoder returned ${w}x${h}, expected ${shorter ? `a shorter side of ${side}` : `${size}x${size}`}`,
        where,
      );
    if (channels !== 3 && channels !== 1)
      throw new ImageError('unsupported', `decoder returned ${channels} channels`, where);
    // the centre size x size square (all of it for 'fill'), as RGB
    const left = Math.round((w - size) / 2);
    const top = Math.round((h - size) / 2);
    const out = new Uint8Array(size * size * 3);
    for (let y = 0; y < size; y++) {
      const row = (top + y) * w + left;
      if (channels === 3) out.set(data.subarray(row * 3, (row + size) * 3), y * size * 3);
      else for (let x = 0, o = y * size * 3; x < size; x++, o += 3) out[o] = out[o + 1] = out[o + 2] = data[row + x];
    }
    return out;
  } catch (e) {
    if (e instanceof ImageError) throw e;
    if (typeof input === 'string') await explainFileProblem(input);
    throw await damagedIfKnown(
      classifySharpError(e as Error, maxPixels, where),
      typeof input === 'string' ? await fileHead(input) : input,
      where,
    );
  }
}

/**
 * The format and size of an encoded image, read from its header without decoding its pixels (cheap,
 * also for a decompression bomb). Throws ImageError: unsupported (not an image, or a format this build
 * cannot decode), corrupt (empty, or a header the decoder cannot read).
 */
export async function imageHeader(bytes: Uint8Array): Promise<{ format: ImageFormat; width: number; height: number }> {
  if (bytes.length === 0) throw new ImageError('corrupt', 'empty file (0 bytes)');
  const format = sniffImage(bytes);
  if (!format) throw new ImageError('unsupported', 'not an image format this program can read');
  const unreadable = await unreadableFormat(format);
  if (unreadable) throw unreadable;
  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false, pages: 1, page: 0 }).metadata();
  } catch (e) {
    throw await damagedIfKnown(classifySharpError(e as Error, Infinity), bytes);
  }
  if (!meta.width || !meta.height)
    throw new ImageError('corrupt', `the ${FORMAT_NAMES[format]} header gives no image size`);
  return { format, width: meta.width, height: meta.height };
}

/**
 * libvips says "unsupported image format" when it cannot even read a header: for bytes that start like
 * a format this build decodes (a truncated TIFF, say), the file is damaged, not of another format.
 */
async function damagedIfKnown(e: ImageError, head: Uint8Array | null, where?: string): Promise<ImageError> {
  if (e.kind !== 'unsupported' || !head) return e;
  const format = sniffImage(head);
  if (!format || !(await readableFormats()).includes(format)) return e;
  return new ImageError(
    'corrupt',
    `damaged or truncated ${FORMAT_NAMES[format]} image: it starts as one, but its header cannot be read`,
    where,
  );
}

/** The first bytes of a file (to sniff its format), or null when it cannot be read. */
async function fileHead(file: string): Promise<Uint8Array | null> {
  try {
    const h = await fs.open(file, 'r');
    try {
      const buf = Buffer.alloc(64);
      const { bytesRead } = await h.read(buf, 0, buf.length, 0);
      return buf.subarray(0, bytesRead);
    } finally {
      await h.close();
    }
  } catch {
    return null;
  }
}

/** When sharp could not use a path: say plainly if it is missing, unreadable, a folder or empty. */
async function explainFileProblem(file: string): Promise<void> {
  let st;
  try {
    st = await fs.stat(file);
    const h = await fs.open(file, 'r');
    await h.close();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ImageError(
      'corrupt',
      code === 'ENOENT' ? 'file not found' : `cannot read file (${code ?? (e as Error).message})`,
      file,
    );
  }
  if (st.isDirectory()) throw new ImageError('unsupported', 'is a folder, not an image', file);
  if (st.size === 0) throw new ImageError('corrupt', 'empty file (0 bytes)', file);
}

/** Map a sharp/libvips error to an ImageError with a one-line human reason. */
export function classifySharpError(e: Error, maxPixels: number, where?: string): ImageError {
  const lines = String(e?.message ?? e)
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const first = lines[0] ?? 'unknown decoder error';
  const detail = [...new Set(lines)].slice(0, 2).join('; ');
  if (/pixel limit/i.test(first))
    return new ImageError(
      'too_large',
      `image has more than ${maxPixels} pixels (the configured limit; see caption.maxPixels)`,
      where,
    );
  if (/unsupported image format/i.test(first))
    return new ImageError('unsupported', 'not an image format this program can read', where);
  if (/corrupt header/i.test(first))
    return new ImageError(
      'corrupt',
      `corrupt image header (${shorten(detail.replace(/^Input (buffer|file) has corrupt header:\s*/i, ''))})`,
      where,
    );
  if (/premature end|truncated|corrupt|invalid|bad|not a|damaged|error/i.test(detail))
    return new ImageError('corrupt', `damaged or truncated image (${shorten(detail)})`, where);
  return new ImageError('unsupported', `cannot decode image (${shorten(detail)})`, where);
}

function shorten(s: string): string {
  return s.length > 160 ? s.slice(0, 157) + '...' : s;
}

const FORMAT_NAMES: Record<ImageFormat, string> = {
  jpeg: 'JPEG',
  png: 'PNG',
  gif: 'GIF',
  webp: 'WebP',
  tiff: 'TIFF',
  avif: 'AVIF',
  heif: 'HEIC/HEIF',
  bmp: 'BMP',
};
let readable: Promise<ImageFormat[]> | null = null;

/**
 * The sniffable formats (src/util/imagetype.ts) this build of sharp can decode, asked of sharp at run time
 * (sharp.format[..].input). AVIF and HEIC share libheif's loader, but prebuilt sharp only has the AV1
 * codec: HEIC (HEVC) counts as readable only when sharp can also write HEVC (a libheif with the HEVC
 * codecs). BMP has no libvips loader at all. For messages, the page of `serve`, and `caption`.
 */
export function readableFormats(): Promise<ImageFormat[]> {
  readable ??= (async () => {
    const f = sharp.format as unknown as Record<string, { input?: { buffer?: boolean } } | undefined>;
    const can = (name: string) => f[name]?.input?.buffer === true;
    const out: ImageFormat[] = [];
    for (const fmt of ['jpeg', 'png', 'gif', 'webp', 'tiff'] as const) if (can(fmt)) out.push(fmt);
    if (can('heif')) {
      out.push('avif');
      const hevc = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#808080' } })
        .heif({ compression: 'hevc' })
        .toBuffer()
        .then(
          () => true,
          () => false,
        );
      if (hevc) out.push('heif');
    }
    if (can('bmp') || can('magick')) out.push('bmp');
    return out;
  })();
  return readable;
}

/** "JPEG, PNG, GIF, WebP, TIFF or AVIF": the readable formats, for messages. */
export function formatList(formats: ImageFormat[]): string {
  const names = formats.map((f) => FORMAT_NAMES[f]);
  return names.length > 1 ? `${names.slice(0, -1).join(', ')} or ${names[names.length - 1]}` : (names[0] ?? 'none');
}

/** An ImageError for bytes sniffed as `format` when this build cannot decode it, else null. */
export async function unreadableFormat(format: ImageFormat): Promise<ImageError | null> {
  const formats = await readableFormats();
  if (formats.includes(format)) return null;
  return new ImageError(
    'unsupported',
    `${FORMAT_NAMES[format]} images cannot be decoded by this build of sharp/libvips; convert to ${formatList(formats)}`,
  );
}
