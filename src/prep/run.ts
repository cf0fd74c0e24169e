// The prep stage at the I/O edge: read caption and split files, assign splits, check the images
// folder, call the pure builder, and write the prepared folder (see prepared.ts for the format).
// Order matters for reproducibility: splits are assigned from the captions alone (so they do not
// depend on which image files happen to be on disk); missing images are excluded afterwards.
import { createReadStream, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { stagePaths } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { ConfigError, DataError } from '../errors.js';
import { log } from '../log.js';
import { lockFolder } from '../util/lock.js';
import { checkStageFolder } from '../util/stagedir.js';
import { buildPrepared, checkBuildOptions, type SplitImage } from './build.js';
import {
  Collector,
  show,
  parseCaptionCsv,
  parseCoco,
  parseFlickr30kCsv,
  parseFlickr8k,
  parseKarpathy,
  type ImageEntry,
} from './formats.js';
import {
  PREPARED_FILES,
  PREPARED_KIND,
  SPLITS,
  writePrepared,
  type PreparedManifest,
  type SplitName,
} from './prepared.js';
import { assignByRatio, assignFromLists, parseSplitList, type SplitList } from './split.js';

/** How many names to show in messages and keep in the manifest. */
const FIRST = 10;

export interface PrepResult {
  dir: string;
  manifest: PreparedManifest;
}

/**
 * Read a text file as UTF-8. Bytes that are not valid UTF-8 become U+FFFD, and each line holding
 * some gets a `file:line` warning pushed to `warnings` (the caller logs them or fails with --strict).
 */
/**
 * The most bytes prep reads from one text file: far above any captions file (COCO's largest is about
 * 150 MB), and below what one JavaScript string can hold, so /dev/zero or a runaway pipe is refused
 * instead of filling memory.
 */
export const MAX_TEXT_BYTES = 512 * 1024 ** 2;

/** The bytes of `file` (a regular file or a pipe, such as <(zcat captions.gz)), at most MAX_TEXT_BYTES. */
async function readCapped(file: string): Promise<Buffer> {
  const st = await fs.stat(file);
  if (st.isDirectory()) throw Object.assign(new Error('is a folder'), { code: 'EISDIR' });
  if (st.isCharacterDevice() || st.isBlockDevice() || st.isSocket())
    throw Object.assign(new Error('not a file'), { code: 'ENOTFILE' });
  if (st.isFile() && st.size > MAX_TEXT_BYTES) throw Object.assign(new Error('too large'), { code: 'ETOOBIG' });
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of createReadStream(file)) {
    n += (chunk as Buffer).length;
    if (n > MAX_TEXT_BYTES) throw Object.assign(new Error('too large'), { code: 'ETOOBIG' });
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

async function readText(file: string, what: string, warnings: string[]): Promise<string> {
  let bytes: Buffer;
  try {
    bytes = await readCapped(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EISDIR'
          ? 'is a folder'
          : code === 'ENOTFILE'
            ? 'is a device or socket, not a file'
            : code === 'ETOOBIG'
              ? `larger than ${MAX_TEXT_BYTES / 1024 ** 2} MiB, more than any captions file`
              : (code ?? (e as Error).message);
    throw new DataError(`${file}: cannot read ${what}: ${why}`);
  }
  const text = new TextDecoder('utf-8', { ignoreBOM: true }).decode(bytes);
  if (text.includes('\uFFFD')) {
    try {
      new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      text.split(/\r\n|\n|\r/).forEach((line, i) => {
        if (line.includes('\uFFFD')) warnings.push(`${file}:${i + 1}: invalid UTF-8 (read as U+FFFD): ${show(line)}`);
      });
    }
  }
  return text;
}

/** Log prep's data warnings, or fail with all of them under --strict. */
function reportWarnings(warnings: readonly string[], strict: boolean): void {
  if (warnings.length === 0) return;
  const shown = warnings.slice(0, FIRST).map((w) => '  ' + w);
  if (warnings.length > FIRST) shown.push(`  ... and ${warnings.length - FIRST} more`);
  if (strict)
    throw new DataError(
      `${plural(warnings.length, 'problem')} in the captions or split files (prep.strict is on; fix the data or drop --strict to read it anyway):\n${shown.join('\n')}`,
    );
  log.warn(
    `${plural(warnings.length, 'problem')} in the captions or split files (read anyway; --strict makes them errors):\n${shown.join('\n')}`,
  );
}

type Source = { file: string; split?: SplitName };

/** Which caption files to read for the configured format. */
export function captionSources(ds: Config['dataset']): Source[] {
  const coco = Object.entries(ds.cocoFiles ?? {}).filter(([, f]) => f !== undefined) as [SplitName, string][];
  if (ds.format === 'coco') {
    if (coco.length && ds.captions)
      throw new ConfigError(
        'dataset: set either dataset.captions (one COCO file, split by ratio) or dataset.cocoFiles (one file per split), not both',
      );
    if (coco.length)
      return SPLITS.flatMap((s) => coco.filter(([k]) => k === s).map(([, file]) => ({ file, split: s })));
    if (ds.captions) return [{ file: ds.captions }];
    throw new ConfigError(
      'dataset: format coco needs dataset.cocoFiles.{train,val,test} or dataset.captions (--captions FILE)',
    );
  }
  if (coco.length) throw new ConfigError(`dataset.cocoFiles: only used by format coco (format is ${ds.format})`);
  if (!ds.captions) throw new ConfigError(`dataset.captions: not set: pass --captions FILE (format ${ds.format})`);
  return [{ file: ds.captions }];
}

/** Parse every caption source into one collection (keys unique across files), with `file:line` warnings. */
export async function readCaptions(
  format: Config['dataset']['format'],
  sources: Source[],
): Promise<{ images: ImageEntry[]; warnings: string[] }> {
  const c = new Collector();
  const encoding: string[] = [];
  for (const { file, split } of sources) {
    const text = await readText(file, 'captions file', encoding);
    switch (format) {
      case 'flickr8k':
        parseFlickr8k(text, file, c);
        break;
      case 'flickr30k-csv':
        parseFlickr30kCsv(text, file, c);
        break;
      case 'csv':
        parseCaptionCsv(text, file, c);
        break;
      case 'karpathy':
        parseKarpathy(text, file, c);
        break;
      case 'coco':
        parseCoco(text, file, split, c);
        break;
    }
  }
  const r = c.result();
  return { images: r.images, warnings: [...encoding, ...r.warnings] };
}

export type SplitMethod = PreparedManifest['options']['split']['method'];

export function resolveSplitMethod(ds: Config['dataset']): SplitMethod {
  const hasLists = Boolean(ds.split.trainFile || ds.split.valFile || ds.split.testFile);
  const hasField =
    ds.format === 'karpathy' ||
    (ds.format === 'coco' && Object.values(ds.cocoFiles ?? {}).some((f) => f !== undefined));
  const m = ds.split.method;
  if (m === 'auto') return hasField ? 'field' : hasLists ? 'files' : 'ratio';
  if (m === 'field' && !hasField)
    throw new ConfigError('dataset.split.method: "field" needs format karpathy, or coco with dataset.cocoFiles');
  if (m === 'files' && !hasLists)
    throw new ConfigError('dataset.split.method: "files" needs dataset.split.trainFile, valFile and/or testFile');
  return m;
}

/** Which of `files` (relative paths) exist under `root`, listing each folder once. */
async function existingFiles(root: string, files: Iterable<string>): Promise<Set<string>> {
  const listings = new Map<string, Set<string> | null>();
  const found = new Set<string>();
  for (const f of files) {
    const dir = path.dirname(f);
    let names = listings.get(dir);
    if (names === undefined) {
      try {
        names = new Set(await fs.readdir(path.join(root, dir)));
      } catch {
        names = null;
      }
      listings.set(dir, names);
    }
    if (names?.has(path.basename(f))) found.add(f);
  }
  return found;
}

const preview = (names: string[]) => names.slice(0, FIRST).join(', ') + (names.length > FIRST ? ', ...' : '');
const plural = (n: number, one: string, many = one + 's') => `${n.toLocaleString('en-US')} ${n === 1 ? one : many}`;

/**
 * Run prep with a resolved config; writes to stagePaths(config).prepared. The output folder is checked (not
 * another stage's artifact, creatable) and locked (one writer: two preps into one folder would mix their
 * files) before the captions are read.
 */
export async function runPrep(config: Config): Promise<PrepResult> {
  const dir = stagePaths(config).prepared;
  await checkStageFolder(dir, {
    kind: PREPARED_KIND,
    option: '--out or prep.out',
    ownNames: Object.values(PREPARED_FILES),
  });
  const lock = await lockFolder(dir, `prepared dataset folder ${dir}`);
  try {
    return await prepInto(config, dir);
  } finally {
    await lock.release();
  }
}

async function prepInto(config: Config, dir: string): Promise<PrepResult> {
  const ds = config.dataset;
  const p = config.prep;
  checkBuildOptions(p);
  const sources = captionSources(ds);
  const method = resolveSplitMethod(ds);
  const listFiles = { train: ds.split.trainFile, val: ds.split.valFile, test: ds.split.testFile };
  if (method !== 'files' && Object.values(listFiles).some(Boolean))
    log.warn(`split files are ignored: dataset.split.method is ${method}`);

  const { images: entries, warnings } = await readCaptions(ds.format, sources);
  if (entries.length === 0) throw new DataError(`${sources.map((s) => s.file).join(', ')}: no captions found`);

  // splits
  const dropped: Record<string, number> = {};
  let assigned: Map<string, SplitName>;
  const splitFiles: Partial<Record<SplitName, string>> = {};
  if (method === 'field') {
    assigned = new Map(entries.filter((e) => e.split).map((e) => [e.image, e.split!]));
  } else if (method === 'files') {
    const lists: SplitList[] = [];
    for (const s of SPLITS) {
      const f = listFiles[s];
      if (!f) continue;
      splitFiles[s] = path.resolve(f);
      lists.push(parseSplitList(await readText(f, `${s} split file`, warnings), f, s));
    }
    const a = assignFromLists(
      entries.map((e) => e.image),
      lists,
    );
    assigned = a.split;
    if (a.listedWithoutCaptions.length) {
      dropped.listedWithoutCaptions = a.listedWithoutCaptions.length;
      log.warn(
        `${plural(a.listedWithoutCaptions.length, 'image')} in the split files ${a.listedWithoutCaptions.length === 1 ? 'has' : 'have'} no captions: ${preview(a.listedWithoutCaptions)}`,
      );
    }
  } else {
    assigned = assignByRatio(
      entries.map((e) => e.image),
      ds.split.ratios,
      ds.split.seed,
    );
  }
  reportWarnings(warnings, p.strict);
  const noSplit = entries.filter((e) => !assigned.has(e.image));
  dropped.noSplitImages = noSplit.length;
  dropped.noSplitCaptions = noSplit.reduce((n, e) => n + e.captions.length, 0);
  if (noSplit.length) {
    log.warn(
      `${plural(noSplit.length, 'image')} (${plural(dropped.noSplitCaptions, 'caption')}) ${noSplit.length === 1 ? 'is' : 'are'} in no split and left out: ${preview(noSplit.map((e) => e.image))}`,
    );
  }
  let inSplit = entries.filter((e) => assigned.has(e.image));

  // images on disk
  let imagesDir: string | null = null;
  const missing: ImageEntry[] = [];
  if (ds.images) {
    imagesDir = path.resolve(ds.images);
    const st = await fs.stat(imagesDir).catch(() => null);
    if (!st?.isDirectory()) throw new DataError(`${ds.images}: images folder not found`);
    const found = await existingFiles(
      imagesDir,
      inSplit.flatMap((e) => [e.file, ...(e.alt ?? [])]),
    );
    const present: ImageEntry[] = [];
    for (const e of inSplit) {
      const hit = [e.file, ...(e.alt ?? [])].find((f) => found.has(f));
      if (hit) present.push(hit === e.file ? e : { ...e, file: hit });
      else missing.push(e);
    }
    if (missing.length && present.length === 0) {
      throw new DataError(
        `${ds.images}: none of the ${plural(missing.length, 'image')} named by the captions ${missing.length === 1 ? 'is' : 'are'} in this folder ` +
          `(looked for ${preview(missing.map((e) => e.file))}); is dataset.images (--images) the right folder?`,
      );
    }
    if (missing.length) {
      const names = missing.map((e) => e.file);
      const msg = `${plural(missing.length, 'image')} named by the captions ${missing.length === 1 ? 'is' : 'are'} missing from ${ds.images}: ${preview(names)}`;
      if (p.strict) throw new DataError(`${msg} (prep.strict is on; fix the data or drop --strict to exclude them)`);
      log.warn(`${msg}; excluded`);
    }
    inSplit = present;
  }
  dropped.missingImages = missing.length;
  dropped.missingImageCaptions = missing.reduce((n, e) => n + e.captions.length, 0);

  const built = buildPrepared(
    inSplit.map(
      (e): SplitImage => ({
        image: e.image,
        file: e.file,
        captions: e.captions,
        split: assigned.get(e.image)!,
        cocoId: e.cocoId,
      }),
    ),
    p,
  );
  const total = SPLITS.reduce((n, s) => n + built.counts[s].captions, 0);
  if (total === 0)
    throw new DataError(`${sources.map((s) => s.file).join(', ')}: no captions left after splitting and cleaning`);
  if (built.counts.train.captions === 0)
    log.warn('the training split is empty: the vocabulary holds only the special tokens');
  for (const s of ['val', 'test'] as const) if (built.counts[s].captions === 0) log.warn(`the ${s} split is empty`);
  dropped.emptyCaptions = built.dropped.emptyCaptions;
  dropped.overLengthCaptions = built.dropped.overLengthCaptions;
  dropped.imagesWithoutCaptions = built.dropped.imagesWithoutCaptions;

  const { out: _out, ...prepOptions } = p;
  const splitOptions: PreparedManifest['options']['split'] =
    method === 'ratio' ? { method, ratios: { ...ds.split.ratios }, seed: ds.split.seed } : { method };
  const manifest = await writePrepared(dir, {
    vocab: built.vocab,
    splits: built.splits,
    manifest: {
      kind: 'captioner.prepared',
      version: 1,
      name: config.name,
      createdAt: new Date().toISOString(),
      format: ds.format,
      sources: { captions: sources.map((s) => path.resolve(s.file)), splitFiles },
      imagesDir,
      options: { prep: prepOptions, split: splitOptions },
      counts: built.counts,
      vocabSize: built.vocab.size,
      captionLength: built.captionLength,
      truncated: built.truncated,
      dropped,
      missingImages: { count: missing.length, first: missing.slice(0, FIRST).map((e) => e.file) },
      noSplit: { count: noSplit.length, first: noSplit.slice(0, FIRST).map((e) => e.image) },
    },
  });
  return { dir, manifest };
}

/** A few human lines describing a prepared dataset (for stderr). */
export function summary(dir: string, m: PreparedManifest): string[] {
  const c = m.counts;
  const o = m.options.prep;
  const lines = [
    `prepared ${m.format}: ${SPLITS.map((s) => `${s} ${plural(c[s].images, 'image')} / ${plural(c[s].captions, 'caption')}`).join(', ')}`,
    `vocabulary ${m.vocabSize.toLocaleString('en-US')} tokens (words seen >= ${o.minCount} times in training captions); caption length p50 ${m.captionLength.p50}, p95 ${m.captionLength.p95}, max ${m.captionLength.max} tokens`,
  ];
  if (m.truncated) lines.push(`${plural(m.truncated, 'caption')} truncated to ${o.maxLength} tokens`);
  const d = Object.entries(m.dropped).filter(([, n]) => n > 0);
  if (d.length) lines.push(`left out: ${d.map(([k, n]) => `${k} ${n.toLocaleString('en-US')}`).join(', ')}`);
  lines.push(`wrote ${dir} (fingerprint ${m.fingerprint.slice(0, 12)})`);
  return lines;
}
