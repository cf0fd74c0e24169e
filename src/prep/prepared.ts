// The prepared-dataset folder: a contract the feature cache, training and evaluation read.
//   vocab.json     {"tokens": ["<pad>", unk, start, end, words by descending training count...]}
//   train.jsonl, val.jsonl, test.jsonl
//                  one image a line, sorted by key:
//                  {"image": key, "file": path under the images folder, "captions": [raw...], "tokens": [[2,...,3]...],
//                   "cocoId": 391895}  (last, only when the source has a COCO id: COCO files, Karpathy's cocoid)
//                  captions[i] and tokens[i] belong together; ids include start and end, no padding.
//                  Sets written before cocoId existed have none; they read the same (results use file names).
//   manifest.json  PreparedManifest below (written last: its presence marks a complete folder).
// `fingerprint` = sha256 over the four data files (see fingerprintOf); consumers compare it to check
// that a feature cache or a model was built from this exact data. The cocoId members are left out of
// it: they name images, they do not change what a model learns, so preparing an older set again keeps
// its fingerprint (and the models trained on it).
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { CaptionerError, DataError } from '../errors.js';
import type { CleanOptions } from '../text/clean.js';
import { Vocab } from '../text/vocab.js';
import { ensureDir, writeFileAtomic, writeJsonAtomic } from '../util/fsx.js';
import { checkStageFolder } from '../util/stagedir.js';

export type SplitName = 'train' | 'val' | 'test';
export const SPLITS: readonly SplitName[] = ['train', 'val', 'test'];

/** A COCO image id: an integer in the official files; a string where a COCO-format file uses one. */
export type CocoId = number | string;
/** An id COCO tools can match: a safe integer, or a non-empty string (COCO-format files that use them). */
export const isCocoId = (v: unknown): v is CocoId =>
  (typeof v === 'number' && Number.isSafeInteger(v)) || (typeof v === 'string' && v !== '');

/** The options prep built the set with (src/prep/build.ts), recorded in the manifest. */
export interface BuildOptions extends CleanOptions {
  startToken: string;
  endToken: string;
  unkToken: string;
  minCount: number;
  /** Tokens per caption, start and end included. */
  maxLength: number;
  overLength: 'truncate' | 'drop';
}

export const PREPARED_KIND = 'captioner.prepared';
export const PREPARED_VERSION = 1;

export const PREPARED_FILES = {
  manifest: 'manifest.json',
  vocab: 'vocab.json',
  train: 'train.jsonl',
  val: 'val.jsonl',
  test: 'test.jsonl',
} as const;

export interface PreparedImage {
  image: string;
  file: string;
  captions: string[];
  tokens: number[][];
  /** The image's id in the source's COCO annotations (what COCO results name it by), when it has one. */
  cocoId?: CocoId;
}

export interface LengthStats {
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  max: number;
}

export interface PreparedManifest {
  kind: typeof PREPARED_KIND;
  version: typeof PREPARED_VERSION;
  name: string;
  createdAt: string;
  format: string;
  /** Absolute paths of the files read. */
  sources: { captions: string[]; splitFiles: Partial<Record<SplitName, string>> };
  /** Absolute path of the images folder, or null when it was not given. */
  imagesDir: string | null;
  options: {
    /** The cleaning, vocabulary and length settings used (prep config, less its output folder). */
    prep: BuildOptions & { strict: boolean };
    split: { method: 'files' | 'field' | 'ratio'; ratios?: Record<SplitName, number>; seed?: number };
  };
  counts: Record<SplitName, { images: number; captions: number }>;
  vocabSize: number;
  /** Caption lengths in tokens, start and end included, over every non-empty caption of the kept images' splits, before truncating or dropping. */
  captionLength: LengthStats;
  /** Captions cut to maxLength (overLength: truncate). */
  truncated: number;
  /** What was left out, by reason (captions or images, as the key says). */
  dropped: Record<string, number>;
  /** Images the captions name that are not in the images folder (excluded). */
  missingImages: { count: number; first: string[] };
  /** Images in no split (e.g. not listed in any split file). */
  noSplit: { count: number; first: string[] };
  files: typeof PREPARED_FILES;
  fingerprint: string;
}

export interface Prepared {
  dir: string;
  manifest: PreparedManifest;
  vocab: Vocab;
  splits: Record<SplitName, PreparedImage[]>;
}

const DATA_FILES = ['vocab', 'train', 'val', 'test'] as const;

/** A split line's trailing cocoId member, as serializeSplit writes it. */
const COCO_ID_MEMBER = /,"cocoId":(?:-?\d+|"(?:[^"\\\n]|\\.)*")\}$/gm;
const COCO_ID_KEY = Buffer.from('"cocoId":');

/** A split file's bytes with every line's trailing cocoId member removed (what the fingerprint covers). */
function withoutCocoIds(bytes: Buffer): Buffer {
  if (!bytes.includes(COCO_ID_KEY)) return bytes;
  return Buffer.from(bytes.toString('utf8').replace(COCO_ID_MEMBER, '}'), 'utf8');
}

/**
 * sha256 (hex) over the data files' names, byte lengths and bytes, in the order vocab, train, val, test;
 * the split files without their cocoId members (see the header).
 */
export function fingerprintOf(contents: Record<(typeof DATA_FILES)[number], string | Uint8Array>): string {
  const h = createHash('sha256');
  for (const k of DATA_FILES) {
    const c = contents[k];
    let bytes =
      typeof c === 'string'
        ? Buffer.from(c, 'utf8')
        : Buffer.isBuffer(c)
          ? c
          : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
    if (k !== 'vocab') bytes = withoutCocoIds(bytes);
    h.update(`${PREPARED_FILES[k]}\0${bytes.byteLength}\0`);
    h.update(bytes);
  }
  return h.digest('hex');
}

export function serializeVocab(vocab: Vocab): string {
  return JSON.stringify(vocab.toJSON()) + '\n';
}

/** One compact JSON object a line; the images must already be sorted by key. */
export function serializeSplit(images: readonly PreparedImage[]): string {
  let out = '';
  for (const im of images) {
    const line: Record<string, unknown> = { image: im.image, file: im.file, captions: im.captions, tokens: im.tokens };
    if (im.cocoId !== undefined) line.cocoId = im.cocoId; // last: fingerprintOf leaves it out
    out += JSON.stringify(line) + '\n';
  }
  return out;
}

/**
 * Write a prepared folder atomically file by file, the manifest last. Returns the manifest with its
 * fingerprint filled in.
 */
export async function writePrepared(
  dir: string,
  data: {
    vocab: Vocab;
    splits: Record<SplitName, PreparedImage[]>;
    manifest: Omit<PreparedManifest, 'fingerprint' | 'files'>;
  },
): Promise<PreparedManifest> {
  const contents = {
    vocab: serializeVocab(data.vocab),
    train: serializeSplit(data.splits.train),
    val: serializeSplit(data.splits.val),
    test: serializeSplit(data.splits.test),
  };
  const manifest: PreparedManifest = { ...data.manifest, files: PREPARED_FILES, fingerprint: fingerprintOf(contents) };
  await checkStageFolder(dir, {
    kind: PREPARED_KIND,
    option: '--out or prep.out',
    ownNames: Object.values(PREPARED_FILES),
  });
  try {
    await ensureDir(dir);
    // a stale manifest must not vouch for half-written files
    await fs.rm(path.join(dir, PREPARED_FILES.manifest), { force: true });
    for (const k of DATA_FILES) await writeFileAtomic(path.join(dir, PREPARED_FILES[k]), contents[k]);
    await writeJsonAtomic(path.join(dir, PREPARED_FILES.manifest), manifest);
  } catch (e) {
    if (e instanceof CaptionerError) throw e;
    const err = e as NodeJS.ErrnoException;
    throw new DataError(
      `${dir}: cannot write the prepared dataset: ${err.code ?? err.message}${err.path ? ` (${err.path})` : ''}`,
    );
  }
  return manifest;
}

async function readBytes(file: string, what: string): Promise<Buffer> {
  try {
    return await fs.readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new DataError(
      `${file}: cannot read ${what}: ${code === 'ENOENT' ? 'no such file' : (code ?? (e as Error).message)}`,
    );
  }
}

/** Parse and check one split file against the vocabulary. */
export function parseSplitFile(text: string, file: string, vocabSize: number): PreparedImage[] {
  const out: PreparedImage[] = [];
  const lines = text.split('\n');
  let prev: string | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.trim() === '') continue;
    const at = `${file}:${i + 1}`;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      throw new DataError(`${at}: not valid JSON: ${(e as Error).message}`);
    }
    const o = v as Partial<PreparedImage> | null;
    if (!o || typeof o !== 'object' || typeof o.image !== 'string' || typeof o.file !== 'string') {
      throw new DataError(`${at}: expected {"image": string, "file": string, "captions": [...], "tokens": [...]}`);
    }
    if (!Array.isArray(o.captions) || !o.captions.every((c) => typeof c === 'string'))
      throw new DataError(`${at}: "captions" must be a list of strings`);
    if (!Array.isArray(o.tokens) || o.tokens.length !== o.captions.length)
      throw new DataError(`${at}: "tokens" must be a list with one entry per caption`);
    for (const seq of o.tokens) {
      if (!Array.isArray(seq) || !seq.every((t) => Number.isInteger(t) && t >= 0 && t < vocabSize)) {
        throw new DataError(`${at}: "tokens" must hold lists of ids below the vocabulary size ${vocabSize}`);
      }
    }
    if (prev !== undefined && !(prev < o.image))
      throw new DataError(
        `${at}: images are not sorted by key (or repeat): ${JSON.stringify(o.image)} after ${JSON.stringify(prev)}`,
      );
    if (o.cocoId !== undefined && !isCocoId(o.cocoId))
      throw new DataError(`${at}: "cocoId" must be an integer or a non-empty string`);
    prev = o.image;
    const im: PreparedImage = { image: o.image, file: o.file, captions: o.captions, tokens: o.tokens };
    if (o.cocoId !== undefined) im.cocoId = o.cocoId;
    out.push(im);
  }
  return out;
}

/** Read a prepared folder; DataError when it is not one, is incomplete, or its files changed. */
export async function loadPrepared(dir: string): Promise<Prepared> {
  const mfile = path.join(dir, PREPARED_FILES.manifest);
  let stat;
  try {
    stat = await fs.stat(dir);
  } catch {
    throw new DataError(`${dir}: no such folder (run \`captioner prep\` first)`);
  }
  if (!stat.isDirectory()) throw new DataError(`${dir}: not a folder`);
  const mbytes = await fs.readFile(mfile).catch(() => {
    throw new DataError(`${dir}: not a prepared dataset (no ${PREPARED_FILES.manifest}; run \`captioner prep\`)`);
  });
  let manifest: PreparedManifest;
  try {
    manifest = JSON.parse(mbytes.toString('utf8')) as PreparedManifest;
  } catch (e) {
    throw new DataError(`${mfile}: not valid JSON: ${(e as Error).message}`);
  }
  if (manifest?.kind !== PREPARED_KIND)
    throw new DataError(`${mfile}: not a prepared dataset manifest (kind ${JSON.stringify(manifest?.kind)})`);
  if (manifest.version !== PREPARED_VERSION)
    throw new DataError(
      `${mfile}: unsupported version ${JSON.stringify(manifest.version)} (this captioner reads version ${PREPARED_VERSION}); run \`captioner prep\` again`,
    );
  const bytes = {} as Record<(typeof DATA_FILES)[number], Buffer>;
  for (const k of DATA_FILES) bytes[k] = await readBytes(path.join(dir, PREPARED_FILES[k]), `the prepared ${k} file`);
  const fp = fingerprintOf(bytes);
  if (fp !== manifest.fingerprint) {
    throw new DataError(
      `${dir}: the data files do not match the manifest fingerprint (changed or half-written since prep); run \`captioner prep\` again`,
    );
  }
  const vfile = path.join(dir, PREPARED_FILES.vocab);
  let vjson: unknown;
  try {
    vjson = JSON.parse(bytes.vocab.toString('utf8'));
  } catch (e) {
    throw new DataError(`${vfile}: not valid JSON: ${(e as Error).message}`);
  }
  const vocab = Vocab.fromJSON(vjson, vfile);
  const splits = {} as Record<SplitName, PreparedImage[]>;
  for (const s of SPLITS)
    splits[s] = parseSplitFile(bytes[s].toString('utf8'), path.join(dir, PREPARED_FILES[s]), vocab.size);
  return { dir, manifest, vocab, splits };
}
