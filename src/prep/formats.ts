// Caption file parsers (pure: text in, images with their raw captions out), one per dataset format.
// Malformed input is a DataError naming `file:line:` (text formats) or `file: json.path:` (JSON).
// Inconsistent but readable input (a repeated caption number or COCO image id, a non-numeric `#x`) is
// a warning in the same form, collected in Parsed.warnings: the caller logs them, or fails (--strict).
// Blank lines are ignored; captions are trimmed but otherwise kept as written.
import * as path from 'node:path';
import { DataError } from '../errors.js';
import { parseCsv } from './csv.js';
import { isCocoId, type CocoId, type SplitName } from './prepared.js';

export interface ImageEntry {
  /** The image key, e.g. "1000268201_693b08cb0e.jpg". Unique in a dataset. */
  image: string;
  /** The image file relative to the images folder (usually the key). */
  file: string;
  /** Other places the file may be (tried in order when the images folder is checked). */
  alt?: string[];
  captions: string[];
  /** The split the source itself assigns (Karpathy's field, the COCO file), if any. */
  split?: SplitName;
  /** The image's COCO id as the source writes it (COCO `images[].id`, Karpathy `cocoid`), if it has one. */
  cocoId?: CocoId;
}

export interface Parsed {
  /** In order of first appearance. */
  images: ImageEntry[];
  /** Number of captions read. */
  captions: number;
  /** `file:line: what is odd` for inconsistent input that was read anyway (see the header). */
  warnings: string[];
}

/** Groups captions by image key. */
export class Collector {
  private readonly byKey = new Map<string, ImageEntry>();
  private readonly origin = new Map<string, string>();
  private readonly numbered = new Map<string, { where: string; caption: string }>();
  private readonly idClash = new Set<string>();
  readonly warnings: string[] = [];
  captions = 0;

  warn(where: string, message: string): void {
    this.warnings.push(`${where}: ${message}`);
  }

  /**
   * Record that `image` has caption number `num` here. A number seen before for the same image is a
   * warning; returns false when the caption is the same too (a repeated line: the caller skips it).
   */
  numberedOnce(image: string, num: string, caption: string, where: string): boolean {
    const id = `${image}#${num}`;
    const prev = this.numbered.get(id);
    if (!prev) {
      this.numbered.set(id, { where, caption: caption.trim() });
      return true;
    }
    if (prev.caption === caption.trim()) {
      this.warn(where, `${show(id)} repeats ${prev.where} with the same caption; the repeat is left out`);
      return false;
    }
    this.warn(where, `caption number ${show(id)} is used again (first at ${prev.where}); both captions are kept`);
    return true;
  }

  add(
    image: string,
    caption: string,
    where: string,
    extra: { file?: string; alt?: string[]; split?: SplitName; cocoId?: CocoId } = {},
  ): void {
    let e = this.byKey.get(image);
    if (!e) {
      e = { image, file: extra.file ?? image, captions: [] };
      if (extra.alt?.length) e.alt = extra.alt;
      if (extra.split) e.split = extra.split;
      if (extra.cocoId !== undefined) e.cocoId = extra.cocoId;
      this.byKey.set(image, e);
      this.origin.set(image, where);
    } else if (e.split !== extra.split) {
      throw new DataError(
        `${where}: image ${JSON.stringify(image)} is in split ${extra.split ?? '(none)'} here but in ${e.split ?? '(none)'} at ${this.origin.get(image)}`,
      );
    } else if (extra.cocoId !== undefined && e.cocoId !== extra.cocoId && !this.idClash.has(image)) {
      // one image under two ids: its captions are merged and the first id names it in results
      this.idClash.add(image);
      this.warn(
        where,
        `image ${show(image)} has COCO id ${JSON.stringify(extra.cocoId)} here but ${JSON.stringify(e.cocoId ?? null)} at ${this.origin.get(image)}; its captions are merged and results name it by the first`,
      );
    }
    e.captions.push(caption.trim());
    this.captions++;
  }

  has(image: string): boolean {
    return this.byKey.has(image);
  }

  result(): Parsed {
    return { images: [...this.byKey.values()], captions: this.captions, warnings: [...this.warnings] };
  }
}

/** Strip a UTF-8 byte order mark. */
export const stripBom = (text: string) => (text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);

/** Show a line in an error message, shortened. */
export function show(s: string, max = 80): string {
  return JSON.stringify(s.length > max ? s.slice(0, max) + '...' : s);
}

/** A file name with an extension, such as "x.jpg" (to tell `x.jpg#junk` from a `#` inside a name). */
const IMAGE_NAME = /\.[A-Za-z][A-Za-z0-9]{1,4}$/;

/** Split text into lines (LF, CRLF or CR) with 1-based numbers. */
function lines(text: string): string[] {
  return stripBom(text).split(/\r\n|\n|\r/);
}

/**
 * flickr8k: `image.jpg#N<TAB>caption` per line (Flickr8k.token.txt, Flickr30k results_20130124.token).
 * The key is everything before the last `#`; a missing `#N` is tolerated (the key is the whole field).
 * `image.jpg#x` with a non-numeric x after a file extension is taken as `image.jpg`, with a warning
 * (a `#` inside a name, `a#b.jpg`, stays). A repeated `image.jpg#N` is a warning; a repeated line is left out.
 */
export function parseFlickr8k(text: string, file: string, c = new Collector()): Parsed {
  const ls = lines(text);
  for (let i = 0; i < ls.length; i++) {
    const line = ls[i];
    if (line.trim() === '') continue;
    const tab = line.indexOf('\t');
    if (tab < 0)
      throw new DataError(`${file}:${i + 1}: expected "image.jpg#N<TAB>caption" (no tab found): ${show(line)}`);
    const left = line.slice(0, tab).trim();
    const where = `${file}:${i + 1}`;
    const hash = left.lastIndexOf('#');
    const suffix = hash >= 0 ? left.slice(hash + 1) : '';
    let key = left;
    if (hash >= 0 && /^\d+$/.test(suffix)) key = left.slice(0, hash);
    else if (hash > 0 && IMAGE_NAME.test(left.slice(0, hash))) {
      key = left.slice(0, hash);
      c.warn(where, `${show('#' + suffix)} after the image name is not a caption number; read as image ${show(key)}`);
    }
    if (key === '') throw new DataError(`${where}: empty image name before the tab: ${show(line)}`);
    const caption = line.slice(tab + 1);
    if (hash >= 0 && key !== left && !c.numberedOnce(key, suffix, caption, where)) continue;
    c.add(key, caption, where);
  }
  return c.result();
}

/**
 * flickr30k-csv: `image_name|comment_number|comment` (Kaggle results.csv), with or without spaces
 * after `|`, optional header, CRLF or LF. The comment is everything after the second `|`. A known
 * slip of the Kaggle file, `name| 4   comment` (a missing second `|`), is read as number + comment.
 */
export function parseFlickr30kCsv(text: string, file: string, c = new Collector()): Parsed {
  const ls = lines(text);
  let first = true;
  for (let i = 0; i < ls.length; i++) {
    const line = ls[i];
    if (line.trim() === '') continue;
    const parts = line.split('|');
    if (first) {
      first = false;
      if (parts[0].trim().toLowerCase() === 'image_name') continue; // header
    }
    const where = `${file}:${i + 1}`;
    const key = parts[0].trim();
    let num: string;
    let comment: string;
    if (parts.length >= 3) {
      num = parts[1].trim();
      comment = parts.slice(2).join('|');
    } else if (parts.length === 2 && /^\s*\d+\s+\S/.test(parts[1])) {
      const m = /^\s*(\d+)\s+([\s\S]*)$/.exec(parts[1])!;
      num = m[1];
      comment = m[2];
    } else {
      throw new DataError(`${where}: expected "image_name|comment_number|comment": ${show(line)}`);
    }
    if (key === '') throw new DataError(`${where}: empty image_name: ${show(line)}`);
    if (!/^\d+$/.test(num)) throw new DataError(`${where}: comment_number must be a number, got ${show(num)}`);
    if (!c.numberedOnce(key, num, comment, where)) continue;
    c.add(key, comment, where);
  }
  return c.result();
}

/**
 * csv: a header naming `image` and `caption` columns (Kaggle Flickr8k captions.txt: `image,caption`),
 * captions quoted when they hold commas. When the caption is the last column, surplus unquoted
 * commas are taken as part of the caption.
 */
export function parseCaptionCsv(text: string, file: string, c = new Collector()): Parsed {
  const records = parseCsv(stripBom(text), file);
  if (records.length === 0) return c.result();
  const header = records[0].fields.map((h) => h.trim().toLowerCase());
  const ii = header.indexOf('image');
  const ci = header.indexOf('caption');
  if (ii < 0 || ci < 0) {
    throw new DataError(
      `${file}:${records[0].line}: expected a header with "image" and "caption" columns (e.g. "image,caption"), got ${show(records[0].fields.join(','))}`,
    );
  }
  const last = ci === header.length - 1;
  for (let r = 1; r < records.length; r++) {
    const { fields, line } = records[r];
    const where = `${file}:${line}`;
    if (fields.length < header.length || (fields.length > header.length && !last)) {
      throw new DataError(
        `${where}: expected ${header.length} fields (${header.join(',')}), got ${fields.length}: ${show(fields.join(','))}`,
      );
    }
    const key = fields[ii].trim();
    if (key === '') throw new DataError(`${where}: empty image name`);
    const caption = fields.length > header.length ? fields.slice(ci).join(',') : fields[ci];
    c.add(key, caption, where);
  }
  return c.result();
}

type Json = Record<string, unknown>;
const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(stripBom(text));
  } catch (e) {
    throw new DataError(`${file}: not valid JSON: ${(e as Error).message}`);
  }
}

const KARPATHY_SPLITS: Record<string, SplitName> = { train: 'train', restval: 'train', val: 'val', test: 'test' };

/**
 * karpathy: `dataset_{flickr8k,flickr30k,coco}.json` with images[].filename (the key), .split (train,
 * restval = train, val, test), .sentences[].raw, and for COCO .filepath (the file is filepath/filename)
 * and .cocoid (the COCO image id, kept as cocoId). `imgid` is Karpathy's own index, not a COCO id: unused.
 */
export function parseKarpathy(text: string, file: string, c = new Collector()): Parsed {
  const doc = parseJson(text, file);
  const images = isObj(doc) ? doc.images : undefined;
  if (!Array.isArray(images)) throw new DataError(`${file}: not a Karpathy split file: expected {"images": [...]}`);
  images.forEach((img, i) => {
    const at = `${file}: images[${i}]`;
    if (!isObj(img)) throw new DataError(`${at}: expected an object`);
    const { filename, filepath, split, sentences, cocoid } = img;
    if (typeof filename !== 'string' || filename.trim() === '')
      throw new DataError(`${at}: "filename" must be a non-empty string`);
    if (filepath !== undefined && typeof filepath !== 'string')
      throw new DataError(`${at}: "filepath" must be a string`);
    const s = typeof split === 'string' ? KARPATHY_SPLITS[split] : undefined;
    if (!s)
      throw new DataError(`${at}: "split" must be one of train, restval, val, test, got ${JSON.stringify(split)}`);
    if (!Array.isArray(sentences)) throw new DataError(`${at}: "sentences" must be a list`);
    // an integer id of the COCO 2014 annotations ("391895" as a string is read as the number)
    const cocoId =
      typeof cocoid === 'number' && Number.isSafeInteger(cocoid)
        ? cocoid
        : typeof cocoid === 'string' && /^\d{1,15}$/.test(cocoid)
          ? Number(cocoid)
          : undefined;
    if (cocoId === undefined && cocoid !== undefined && cocoid !== null)
      c.warn(
        at,
        `"cocoid" ${show(JSON.stringify(cocoid))} is not an integer; ignored (results name this image by its file name)`,
      );
    const rel = filepath ? path.posix.join(filepath, filename) : filename;
    sentences.forEach((sent, j) => {
      const sat = `${at}.sentences[${j}]`;
      if (!isObj(sent)) throw new DataError(`${sat}: expected an object`);
      let raw = sent.raw;
      if (raw === undefined && Array.isArray(sent.tokens) && sent.tokens.every((t) => typeof t === 'string'))
        raw = sent.tokens.join(' ');
      if (typeof raw !== 'string') throw new DataError(`${sat}: "raw" must be a string`);
      c.add(filename, raw, sat, { file: rel, split: s, cocoId });
    });
  });
  return c.result();
}

/**
 * coco: the official captions JSON (images[].id/.file_name, annotations[].image_id/.caption). The id
 * is kept as cocoId (an integer, or a non-empty string where the file uses those), for COCO results.
 * `split` is the split the whole file belongs to (dataset.cocoFiles), if any. The key is file_name;
 * when coco_url names a folder (".../val2017/x.jpg"), "val2017/x.jpg" is tried as a second location.
 */
export function parseCoco(text: string, file: string, split?: SplitName, c = new Collector()): Parsed {
  const doc = parseJson(text, file);
  if (!isObj(doc) || !Array.isArray(doc.images) || !Array.isArray(doc.annotations)) {
    throw new DataError(`${file}: not a COCO captions file: expected {"images": [...], "annotations": [...]}`);
  }
  const byId = new Map<unknown, { id?: CocoId; name: string; alt?: string[]; at: string }>();
  doc.images.forEach((img, i) => {
    const at = `${file}: images[${i}]`;
    if (!isObj(img)) throw new DataError(`${at}: expected an object`);
    if (typeof img.id !== 'number' && typeof img.id !== 'string') throw new DataError(`${at}: "id" must be a number`);
    if (typeof img.file_name !== 'string' || img.file_name.trim() === '')
      throw new DataError(`${at}: "file_name" must be a non-empty string`);
    let alt: string[] | undefined;
    if (typeof img.coco_url === 'string') {
      const folder = urlFolder(img.coco_url);
      if (folder) alt = [`${folder}/${img.file_name}`];
    }
    const prev = byId.get(img.id);
    if (prev) {
      // the first entry wins: a later one must not take over the captions of another file
      if (prev.name !== img.file_name)
        c.warn(
          at,
          `image id ${JSON.stringify(img.id)} is used again (first at ${prev.at}, ${show(prev.name)}); this entry, ${show(img.file_name)}, is ignored and gets no captions`,
        );
      return;
    }
    byId.set(img.id, { id: isCocoId(img.id) ? img.id : undefined, name: img.file_name, alt, at });
  });
  doc.annotations.forEach((ann, i) => {
    const at = `${file}: annotations[${i}]`;
    if (!isObj(ann)) throw new DataError(`${at}: expected an object`);
    const img = byId.get(ann.image_id);
    if (!img) throw new DataError(`${at}: image_id ${JSON.stringify(ann.image_id)} is not in "images"`);
    if (typeof ann.caption !== 'string') throw new DataError(`${at}: "caption" must be a string`);
    c.add(img.name, ann.caption, at, { alt: img.alt, split, cocoId: img.id });
  });
  return c.result();
}

/** The folder of a URL's file ("http://h/val2017/x.jpg" -> "val2017"), or undefined. */
function urlFolder(url: string): string | undefined {
  try {
    const segs = new URL(url).pathname.split('/').filter((s) => s !== '');
    return segs.length >= 2 ? decodeURIComponent(segs[segs.length - 2]) : undefined;
  } catch {
    return undefined;
  }
}
