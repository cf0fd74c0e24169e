// Attention maps as pictures (src/view/: presentation shared by caption, eval and serve): one PNG per captioned image, a grid of panels. The first panel
// is the photo; then one panel per caption word, the photo darkened where the decoder did NOT look when
// it chose that word, with the word written under it (as in the figures of Show, Attend and Tell).
//
// Geometry: the encoder sees the whole photo stretched to a square (src/features/image.ts, fit 'fill'),
// so attention cell (i, j) of an H x W grid covers rows i/H..(i+1)/H and columns j/W..(j+1)/W of the
// WHOLE photo, whatever its aspect. Panels therefore keep the photo's aspect (fit inside cell x cell, EXIF
// orientation applied like decodeImage), and each word's row is stretched over the whole panel.
// Display: each row is normalised (max -> 1; negative or non-finite weights count as 0), upsampled
// bilinearly to the panel and smoothed with a Gaussian (the paper upsamples by 16 with a Gaussian
// filter), normalised again, then pixel * (floor + (1 - floor) * a).
// Text is an SVG overlay rendered by sharp's librsvg (fontconfig picks DejaVu/Liberation Sans or the
// default sans font); words are XML-escaped and characters XML cannot hold are replaced.
// Output is deterministic for the same input on the same machine (fonts may differ between machines).
import sharp from 'sharp';
import { DECODER_FEATURES } from '../config/schema.js';
import { ModelError } from '../errors.js';
import { classifySharpError, DEFAULT_MAX_PIXELS, ImageError } from '../features/image.js';
import type { RunManifest } from '../model/runfolder.js';
import { escapeXml } from '../util/html.js';

/** The attention grid [H, W] of a run: a decoder that attends over image positions (attention, transformer:
 * DECODER_FEATURES 'grid') on grid features [H, W, C] (as the run's manifest records them: 14 x 14 for
 * block5_conv3, 7 x 7 for block5_pool); null for any other model, and for token features [T, C] (no grid to
 * draw them on). */
export function attentionGridOf(manifest: Pick<RunManifest, 'model' | 'features'>): [number, number] | null {
  const shape = manifest.features?.shape;
  const type = manifest.model?.type;
  const attends =
    typeof type === 'string' &&
    Object.hasOwn(DECODER_FEATURES, type) &&
    DECODER_FEATURES[type as keyof typeof DECODER_FEATURES] === 'grid';
  if (!attends || !Array.isArray(shape) || shape.length !== 3) return null;
  return [shape[0], shape[1]];
}

export interface AttentionMapInput {
  /** The encoded photo (any format sharp reads). */
  image: Uint8Array;
  /** Caption words, one panel each. */
  words: readonly string[];
  /** One row of P = H * W weights per word, positions row-major (as the encoder's grid). */
  attention: readonly ArrayLike<number>[];
  /** The attention grid [H, W], e.g. [14, 14] for VGG16 block5_conv3. */
  grid: readonly [number, number];
  /** Longest side of a panel in pixels, 32..1024 (default 224). */
  cell?: number;
  /** Panels per row (default min(words + 1, 5)). */
  columns?: number;
  /** Gaussian smoothing sigma, in grid cells (default 0.5; 0: plain bilinear). */
  smooth?: number;
  /** Brightness kept where the word did not look at all, 0..1 (default 0.25). */
  floor?: number;
  /** Refuse photos with more pixels than this (default as caption.maxPixels's default). */
  maxPixels?: number;
}

/** Where the panels go: exported so tests (and callers sizing a page) can predict the PNG. */
export interface AttentionMapLayout {
  /** Panel (photo) size in pixels. */
  panel: { width: number; height: number };
  columns: number;
  rows: number;
  gap: number;
  /** Height of the label strip under each panel. */
  label: number;
  fontSize: number;
  width: number;
  height: number;
}

/**
 * Bilinear resampling of a row-major `h x w` grid to `outH x outW`, with pixel centres aligned (the
 * half-pixel convention of PIL, sharp and tf.image.resize): output (y, x) samples the input at
 * ((y + 0.5) * h / outH - 0.5, (x + 0.5) * w / outW - 0.5), clamped to the edges.
 */
export function upsample(
  row: ArrayLike<number>,
  [h, w]: readonly [number, number],
  [outH, outW]: readonly [number, number],
): Float32Array {
  if (row.length !== h * w)
    throw new RangeError(`upsample: row has ${row.length} values, grid ${h}x${w} needs ${h * w}`);
  const out = new Float32Array(outH * outW);
  const xs = axis(w, outW);
  const ys = axis(h, outH);
  for (let y = 0; y < outH; y++) {
    const { i0: y0, i1: y1, t: ty } = ys[y];
    for (let x = 0; x < outW; x++) {
      const { i0: x0, i1: x1, t: tx } = xs[x];
      const top = row[y0 * w + x0] * (1 - tx) + row[y0 * w + x1] * tx;
      const bottom = row[y1 * w + x0] * (1 - tx) + row[y1 * w + x1] * tx;
      out[y * outW + x] = top * (1 - ty) + bottom * ty;
    }
  }
  return out;
}

/** For each output index along one axis: the two input indices and the weight of the second. */
function axis(n: number, outN: number): { i0: number; i1: number; t: number }[] {
  const scale = n / outN;
  return Array.from({ length: outN }, (_, o) => {
    const s = Math.min(Math.max((o + 0.5) * scale - 0.5, 0), n - 1);
    const i0 = Math.floor(s);
    const i1 = Math.min(i0 + 1, n - 1);
    return { i0, i1, t: s - i0 };
  });
}

/** Separable Gaussian blur of a row-major h x w map, in place; edges repeat the border value. */
export function gaussianBlur(map: Float32Array, h: number, w: number, sigma: number): Float32Array {
  if (!(sigma > 0)) return map;
  const radius = Math.max(1, Math.ceil(3 * sigma));
  const kernel = new Float32Array(2 * radius + 1);
  let sum = 0;
  for (let k = -radius; k <= radius; k++) sum += kernel[k + radius] = Math.exp(-(k * k) / (2 * sigma * sigma));
  for (let k = 0; k < kernel.length; k++) kernel[k] /= sum;
  const tmp = new Float32Array(h * w);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      let acc = 0;
      for (let k = -radius; k <= radius; k++)
        acc += kernel[k + radius] * map[y * w + Math.min(Math.max(x + k, 0), w - 1)];
      tmp[y * w + x] = acc;
    }
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      let acc = 0;
      for (let k = -radius; k <= radius; k++)
        acc += kernel[k + radius] * tmp[Math.min(Math.max(y + k, 0), h - 1) * w + x];
      map[y * w + x] = acc;
    }
  return map;
}

/** Scale so the largest value is 1; negative and non-finite values become 0; an all-zero row stays 0. */
export function normaliseRow(row: ArrayLike<number>): Float32Array {
  const out = new Float32Array(row.length);
  let max = 0;
  for (let i = 0; i < row.length; i++) {
    const v = Number.isFinite(row[i]) && row[i] > 0 ? row[i] : 0;
    out[i] = v;
    if (v > max) max = v;
  }
  if (max > 0) for (let i = 0; i < out.length; i++) out[i] /= max;
  return out;
}

/**
 * The display map of one word, panel-sized: normalised, upsampled and smoothed at up to 8 pixels per grid
 * cell (cheap whatever the panel size), upsampled to the panel, normalised again.
 */
export function displayMap(
  row: ArrayLike<number>,
  grid: readonly [number, number],
  panel: { width: number; height: number },
  smooth = 0.5,
): Float32Array {
  const [h, w] = grid;
  const mh = Math.min(panel.height, h * 8);
  const mw = Math.min(panel.width, w * 8);
  const mid = upsample(normaliseRow(row), grid, [mh, mw]);
  gaussianBlur(mid, mh, mw, (smooth * (mh / h + mw / w)) / 2);
  return normaliseRow(upsample(mid, [mh, mw], [panel.height, panel.width]));
}

/** Panel and page geometry for a photo of `photo` pixels (after EXIF orientation). */
export function attentionMapLayout(
  photo: { width: number; height: number },
  words: number,
  o: { cell?: number; columns?: number } = {},
): AttentionMapLayout {
  const cell = Math.round(o.cell ?? 224);
  if (!(cell >= 32 && cell <= 1024)) throw new RangeError(`attention map: cell must be 32..1024 pixels, got ${o.cell}`);
  const scale = cell / Math.max(photo.width, photo.height);
  // a very thin photo still gets a panel one can see (its aspect is then exaggerated)
  const minSide = Math.max(16, Math.round(cell / 4));
  const panel = {
    width: Math.min(cell, Math.max(minSide, Math.round(photo.width * scale))),
    height: Math.min(cell, Math.max(minSide, Math.round(photo.height * scale))),
  };
  const count = words + 1;
  const columns = Math.max(1, Math.min(Math.floor(o.columns ?? 5), count));
  const rows = Math.ceil(count / columns);
  const gap = Math.max(4, Math.round(cell / 28));
  const fontSize = Math.max(11, Math.round(cell / 16));
  const label = Math.round(fontSize * 1.8);
  return {
    panel,
    columns,
    rows,
    gap,
    label,
    fontSize,
    width: gap + columns * (panel.width + gap),
    height: gap + rows * (panel.height + label + gap),
  };
}

/** Shorten a word (by code points) to about what fits in `width` pixels at `fontSize`, with an ellipsis. */
function fit(word: string, width: number, fontSize: number): string {
  const max = Math.max(1, Math.floor((width - 6) / (0.62 * fontSize)));
  const chars = [...word];
  return chars.length <= max ? word : chars.slice(0, Math.max(1, max - 1)).join('') + '\u2026';
}

/** Render the attention map PNG. Throws ImageError for a photo that cannot be read, ModelError for rows that do not match the grid. */
export async function renderAttentionMap(input: AttentionMapInput): Promise<Buffer> {
  const { words, attention, grid } = input;
  const [gh, gw] = grid;
  if (!(Number.isInteger(gh) && Number.isInteger(gw) && gh > 0 && gw > 0))
    throw new ModelError(`attention map: grid must be two positive integers, got ${JSON.stringify(grid)}`);
  if (attention.length !== words.length)
    throw new ModelError(`attention map: ${words.length} words but ${attention.length} attention rows`);
  attention.forEach((row, i) => {
    if (row.length !== gh * gw)
      throw new ModelError(
        `attention map: row ${i} ("${words[i]}") has ${row.length} weights, grid ${gh}x${gw} needs ${gh * gw}`,
      );
  });
  const floor = Math.min(1, Math.max(0, input.floor ?? 0.25));
  const maxPixels = input.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (input.image.length === 0) throw new ImageError('corrupt', 'empty file (0 bytes)');
  const open = () => sharp(input.image, { limitInputPixels: maxPixels, failOn: 'warning', pages: 1, page: 0 });

  let photo: Buffer;
  let layout: AttentionMapLayout;
  try {
    const meta = await open().metadata();
    const size = meta.autoOrient ?? { width: meta.width, height: meta.height };
    layout = attentionMapLayout(size, words.length, input);
    photo = await open()
      .rotate() // EXIF orientation, as decodeImage
      .flatten({ background: '#ffffff' })
      .toColourspace('srgb')
      .resize(layout.panel.width, layout.panel.height, { fit: 'fill', kernel: 'lanczos3' })
      .removeAlpha()
      .raw({ depth: 'uchar' })
      .toBuffer();
  } catch (e) {
    if (e instanceof ImageError || e instanceof RangeError) throw e;
    throw classifySharpError(e as Error, maxPixels);
  }
  const { panel, columns, gap, label, fontSize, width, height } = layout;
  const channels = photo.length / (panel.width * panel.height);
  if (channels !== 3 && channels !== 1) throw new ImageError('unsupported', `decoder returned ${channels} channels`);

  const page = Buffer.alloc(width * height * 3, 255);
  const texts: string[] = [];
  for (let k = 0; k <= words.length; k++) {
    const x0 = gap + (k % columns) * (panel.width + gap);
    const y0 = gap + Math.floor(k / columns) * (panel.height + label + gap);
    const map = k === 0 ? null : displayMap(attention[k - 1], grid, panel, input.smooth ?? 0.5);
    for (let y = 0; y < panel.height; y++) {
      for (let x = 0; x < panel.width; x++) {
        const p = y * panel.width + x;
        const gain = map ? floor + (1 - floor) * map[p] : 1;
        const o = ((y0 + y) * width + x0 + x) * 3;
        for (let c = 0; c < 3; c++) page[o + c] = Math.round(photo[channels === 3 ? 3 * p + c : p] * gain);
      }
    }
    if (k > 0) {
      const cx = x0 + panel.width / 2;
      const by = y0 + panel.height + Math.round(fontSize * 1.25);
      texts.push(`<text x="${cx}" y="${by}">${escapeXml(fit(words[k - 1], panel.width, fontSize))}</text>`);
    }
  }
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">` +
    `<g font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif" font-size="${fontSize}" fill="#111" text-anchor="middle">${texts.join('')}</g></svg>`;
  return sharp(page, { raw: { width, height, channels: 3 } })
    .composite([{ input: Buffer.from(svg), top: 0, left: 0 }])
    .png({ compressionLevel: 9 })
    .toBuffer();
}
