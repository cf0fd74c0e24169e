// `captioner caption`: discover the images, take this process's shard, skip what an earlier run of the
// same output already captioned (--resume; its failed images are retried), then stream every image
// through the pipeline (src/caption/pipeline.ts) and write one JSON line per image as soon as it is done.
// A file that cannot be captioned gets an error line and a warning; the run goes on and ends with
// PartialFailure (exit 3). An abort (Ctrl-C) stops after the lines already done, leaving the output
// valid; a closed stdout (`| head`) ends the run quietly (OutputClosed).
// --attention-maps DIR (attention models only, checked before any work): each captioned image also gets
// its attention map (src/view/attention-map.ts), written atomically to DIR/<name>-<hash>.png before
// its line (which names it in "attention"), so a line never points at a missing or half-written map.
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import type { Config } from '../config/schema.js';
import { DataError, PartialFailure, UsageError, WriteError } from '../errors.js';
import { ImageError } from '../features/image.js';
import { log, progress } from '../log.js';
import { readRunManifest } from '../model/runfolder.js';
import { ensureDir, ioReason, writeFileAtomic } from '../util/fsx.js';
import { acquireLock, lockFileFor, type Lock } from '../util/lock.js';
import { checkStageFolder } from '../util/stagedir.js';
import { shardOf, type Shard } from '../util/shard.js';
import { attentionGridOf, renderAttentionMap } from '../view/attention-map.js';
import { discoverImages, OUTPUT_MARKER, type Found } from './discover.js';
import { displayPath, pathBytes } from './pathname.js';
import { loadCaptioner, type LoadedCaptioner } from './load.js';
import {
  openOutputFile,
  readOutputState,
  resultLine,
  resultText,
  streamSink,
  type LineSink,
  type OutputFormat,
} from './output.js';
import { captionFiles, type CaptionStages } from './pipeline.js';

export interface CaptionRunOptions {
  inputs: string[];
  model: string;
  output?: string;
  resume?: boolean;
  /** jsonl (default) or text (`path<TAB>caption`; not resumable). */
  format?: OutputFormat;
  shard?: Shard | null;
  /** Files read and decoded concurrently (default 4). */
  readAhead?: number;
  /** Where `-` reads paths from (default process.stdin). */
  stdin?: NodeJS.ReadableStream;
  /** Where results go without --output (default process.stdout). */
  stdout?: NodeJS.WritableStream;
  /** Use these stages (a loaded encoder and decoder) instead of loading `model`. */
  stages?: CaptionStages;
  /** Aborted (Ctrl-C): stop after the lines already written; the summary says `interrupted`. */
  signal?: AbortSignal;
  /** Write each image's attention map (PNG) into this folder (attention models only). */
  attentionMaps?: string;
}

export interface CaptionSummary {
  total: number;
  skipped: number;
  captioned: number;
  failed: number;
  seconds: number;
  /** Files a folder scan passed over (not an image extension), by extension. */
  ignored: Record<string, number>;
  interrupted: boolean;
}

/** A human reason for a file that cannot be read. */
export function readFailure(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  switch (code) {
    case 'ENOENT':
      return 'file not found (removed since it was listed?)';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'is a folder, not an image';
    case 'ELOOP':
      return 'symbolic link loop';
    case 'ERR_FS_FILE_TOO_LARGE':
      return 'file too large to read';
    default:
      return `cannot read file (${code ?? (e as Error)?.message ?? String(e)})`;
  }
}

/** Read a file for captioning; unreadable files become ImageError('corrupt') with a human reason. */
export async function readImageFile(file: string | Buffer): Promise<Buffer> {
  try {
    const st = await fs.stat(file);
    if (!st.isFile())
      throw Object.assign(new Error('not a regular file'), { code: st.isDirectory() ? 'EISDIR' : 'ENOTREG' });
    return await fs.readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOTREG') throw new ImageError('unsupported', 'not a regular file');
    throw new ImageError('corrupt', readFailure(e));
  }
}

export function stagesOf(c: LoadedCaptioner, opts: { attention?: boolean } = {}): CaptionStages {
  return {
    load: async (file) => c.prepare(await readImageFile(file)),
    encode: (images) => c.encode(images),
    caption: (features) => c.captionFeatures(features, opts.attention ? { attention: true } : {}),
  };
}

/**
 * The attention map's file name for an image path (a string, or the raw bytes of a name that is not UTF-8):
 * its base name (odd characters replaced, shortened) and a short hash of its absolute path's bytes, so
 * photos with the same name in different folders, or names that differ only in bytes that are not UTF-8,
 * get different maps, and the same photo always gets the same map (a resumed run, another shard).
 */
export function attentionMapName(image: string | Buffer): string {
  const shown = displayPath(image);
  const base =
    path
      .basename(shown, path.extname(shown))
      .replace(/[^\p{L}\p{N}._-]+/gu, '_')
      .slice(0, 60) || 'image';
  // path.resolve on the bytes read as latin1 (one char per byte): '/' and '.' are ASCII, so this resolves the
  // raw path exactly as it resolves a UTF-8 one, and UTF-8 paths hash as they always did
  const latin1 = (b: Buffer) => b.toString('latin1');
  const abs = Buffer.from(path.resolve(latin1(Buffer.from(process.cwd())), latin1(pathBytes(image))), 'latin1');
  const hash = createHash('sha256').update(abs).digest('hex').slice(0, 10);
  return `${base}-${hash}.png`;
}

/** Check --attention-maps before any work: a model that attends over a grid (UsageError otherwise) and a usable folder. */
async function prepareAttentionMaps(dir: string, runDir: string): Promise<[number, number]> {
  const manifest = await readRunManifest(runDir);
  const grid = attentionGridOf(manifest);
  if (!grid) {
    const shape = manifest.features?.shape;
    if (manifest.model?.type !== 'merge' && Array.isArray(shape) && shape.length === 2) {
      throw new UsageError(
        `--attention-maps: ${runDir} attends over tokens [${shape.join(', ')}] of its encoder, not over an image grid [H, W, C], so there is no picture to draw its attention on`,
      );
    }
    throw new UsageError(
      `--attention-maps: ${runDir} is a ${manifest.model?.type ?? 'merge'} model, which does not attend to image positions (or was trained on token features, which have no grid to draw on); attention maps need a model trained with model.type attention or transformer on grid features`,
    );
  }
  if ((await fs.stat(dir).catch(() => null))?.isDirectory() === false)
    throw new UsageError(`--attention-maps ${dir}: is not a folder`);
  // never into another stage's folder (a prepared dataset, a run): its own writer would then refuse it
  await checkStageFolder(dir, { kind: 'captioner.attention-maps', option: '--attention-maps' });
  // ensureDir, never mkdir -p: Node's recursive mkdir spins forever on some paths (/proc/nope)
  await ensureDir(dir).catch((e: unknown) => {
    throw e instanceof DataError ? new DataError(`--attention-maps ${e.message}`) : e;
  });
  // marks the folder as captioner's output, so a later scan of a folder around it does not caption the maps
  const marker = path.join(dir, OUTPUT_MARKER);
  if (
    !(await fs.stat(marker).then(
      () => true,
      () => false,
    ))
  ) {
    await writeFileAtomic(
      marker,
      'Attention maps written by `captioner caption --attention-maps`; caption scans pass over this folder.\n',
    ).catch((e: unknown) => {
      throw new DataError(`--attention-maps ${dir}: cannot write: ${e instanceof WriteError ? e.reason : ioReason(e)}`);
    });
  }
  return grid;
}

/** "3 files with other extensions passed over (.txt 2, .heic 1)", or '' when none. */
export function ignoredNote(ignored: Record<string, number>): string {
  const entries = Object.entries(ignored).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  const n = entries.reduce((s, [, c]) => s + c, 0);
  if (!n) return '';
  return `${n} file${n === 1 ? '' : 's'} with other extensions passed over (${entries.map(([e, c]) => `${e} ${c}`).join(', ')}; see caption.extensions)`;
}

/**
 * Take the lock of the --output file (one writer at a time: a second run appending to, or rewriting, the same
 * file loses lines). A device or pipe (/dev/stdout) has nothing to guard; a folder is refused later.
 */
async function lockOutput(file: string): Promise<Lock | null> {
  const abs = path.resolve(file);
  const dir = path.dirname(abs);
  const real = await fs
    .realpath(abs)
    .catch(async () => path.join(await fs.realpath(dir).catch(() => dir), path.basename(abs)));
  const st = await fs.stat(real).catch(() => null);
  if (st && !st.isFile()) return null;
  if (
    !(await fs.stat(path.dirname(real)).then(
      (d) => d.isDirectory(),
      () => false,
    ))
  )
    throw new DataError(`--output ${file}: cannot write: the folder ${dir} does not exist`);
  return acquireLock(lockFileFor(real), `--output ${file}`);
}

export async function runCaption(config: Config, opts: CaptionRunOptions): Promise<CaptionSummary> {
  if (opts.attentionMaps !== undefined && opts.attentionMaps.trim() === '')
    throw new UsageError('--attention-maps: needs a folder name, got an empty one');
  const lock = opts.output ? await lockOutput(opts.output) : null;
  try {
    return await captionLocked(config, opts);
  } finally {
    await lock?.release();
  }
}

async function captionLocked(config: Config, opts: CaptionRunOptions): Promise<CaptionSummary> {
  const t0 = performance.now();
  const mapsDir = opts.attentionMaps;
  // the --output file first: one that needs --resume, or that is not caption output, is refused before any scan
  const state = opts.output ? await readOutputState(opts.output, opts.resume ?? false) : null;
  const grid = mapsDir && !opts.stages ? await prepareAttentionMaps(mapsDir, opts.model) : null;
  const skippedFiles = new Map<string, number>();
  const outputsSkipped: string[] = [];
  let found: Found[] = await discoverImages(opts.inputs, {
    recursive: config.caption.recursive,
    extensions: config.caption.extensions.map((e) => e.toLowerCase().replace(/^\./, '')),
    stdin: opts.stdin,
    skipped: skippedFiles,
    exclude: [opts.output, mapsDir].filter((p): p is string => Boolean(p)),
    outputsSkipped,
  });
  if (outputsSkipped.length) {
    const n = outputsSkipped.length;
    log.info(
      `caption: passed over ${n} folder${n === 1 ? '' : 's'} of captioner output (attention maps): ${outputsSkipped.slice(0, 3).join(', ')}${n > 3 ? ', ...' : ''}`,
    );
  }
  const ignored = Object.fromEntries(skippedFiles);
  const total = found.length;
  if (opts.shard) {
    found = shardOf(found, opts.shard.index, opts.shard.count);
    log.info(
      `caption: shard ${opts.shard.index}/${opts.shard.count} (${opts.shard.source}): ${found.length} of ${total} images`,
    );
  }
  let sink: LineSink;
  let skipped = 0;
  if (opts.output && state) {
    const retry = new Set(found.filter((f) => state.failed.has(f.path)).map((f) => f.path));
    if (state.done.size) {
      const before = found.length;
      found = found.filter((f) => !state.done.has(f.path));
      skipped = before - found.length;
    }
    if (state.lines.length)
      log.info(
        `caption: --resume: ${skipped} images already captioned in ${opts.output}, ${retry.size} failed before and retried, ${found.length} to go`,
      );
    sink = await openOutputFile(opts.output, state, retry);
  } else sink = streamSink(opts.stdout ?? process.stdout);
  log.info(`caption: ${found.length} image${found.length === 1 ? '' : 's'} to caption`);

  let captioner: LoadedCaptioner | null = null;
  let captioned = 0;
  let failed = 0;
  let interrupted = false;
  const aborted = () => opts.signal?.aborted === true;
  if (found.length === 0) {
    await sink.close();
    const note = ignoredNote(ignored);
    log.info(`caption: nothing to do${note ? `; ${note}` : ''}`);
    return {
      total,
      skipped,
      captioned: 0,
      failed: 0,
      seconds: (performance.now() - t0) / 1000,
      ignored,
      interrupted: false,
    };
  }
  const bar = progress('caption', found.length);
  try {
    let stages = opts.stages;
    if (!stages && !aborted()) {
      captioner = await loadCaptioner(opts.model, {
        config,
        decodeWorkers: config.decode.workers,
        images: found.length,
        signal: opts.signal,
      });
      log.info(
        `caption: model ${captioner.info.name}, encoder ${captioner.info.encoder}, backend ${captioner.info.backend}, beam ${captioner.decode.beam}`,
      );
      if (captioner.decodeWorkers > 1) log.info(threadLine(captioner.decodeWorkers, config));
      stages = stagesOf(captioner, { attention: grid !== null });
    }
    const rawFile = new Map(found.filter((f) => f.file).map((f) => [f.path, f.file!])); // names shown escaped
    if (stages && !aborted()) {
      const results = captionFiles(found, stages, {
        readAhead: opts.readAhead ?? 4,
        encodeBatch: config.caption.batchSize,
        // one decode batch per worker at a time (the pool splits it into decode.batchSize batches)
        decodeBatch: config.decode.batchSize * (captioner?.decodeWorkers ?? 1),
      });
      for await (let r of results) {
        if (aborted()) break; // a result finished after Ctrl-C (maybe cut short by it) is not written
        let map: string | undefined;
        if (mapsDir && grid && !('error' in r) && r.attention) {
          const drawn = await drawAttentionMap(rawFile.get(r.image) ?? r.image, {
            words: r.words ?? [],
            attention: r.attention,
            grid,
            dir: mapsDir,
            maxPixels: config.caption.maxPixels,
          });
          if ('error' in drawn) r = { image: r.image, error: drawn.error };
          else map = drawn.file;
        }
        const line = opts.format === 'text' ? resultText(r) : resultLine(r, map);
        if (line) await sink.write(line);
        if ('error' in r) {
          failed++;
          log.warn(`${r.image}: ${r.error}`);
        } else captioned++;
        bar.tick(1, failed ? { failed } : {});
      }
    }
    interrupted = aborted();
  } catch (e) {
    if (aborted() && (e as Error)?.name === 'AbortError') {
      interrupted = true; // Ctrl-C ended the decoding workers mid-batch: the lines written so far stand
    } else {
      bar.stop();
      await sink.close().catch(() => {}); // the first error is the news
      await captioner?.dispose().catch(() => {});
      throw e;
    }
  }
  bar.stop();
  await sink.close();
  await captioner?.dispose();
  const seconds = (performance.now() - t0) / 1000;
  const done = captioned + failed;
  const note = ignoredNote(ignored);
  log.info(
    `caption: ${captioned} captioned, ${failed} failed${skipped ? `, ${skipped} skipped (resume)` : ''}${interrupted ? `, ${found.length - done} left (interrupted)` : ''} in ${seconds.toFixed(1)} s (${(done / Math.max(seconds, 1e-9)).toFixed(1)} img/s)${note ? `; ${note}` : ''}`,
  );
  if (failed && !interrupted)
    throw new PartialFailure(`${failed} of ${done} images could not be captioned (see the "error" lines)`);
  return { total, skipped, captioned, failed, seconds, ignored, interrupted };
}

/** How caption splits the cores between the encoder and the decoding workers (they take turns). */
export function threadLine(workers: number, config: Config, cores = availableParallelism()): string {
  const ort =
    config.threads > 0 ? `${config.threads} thread${config.threads === 1 ? '' : 's'}` : `${cores} threads, every core`;
  return `caption: the image encoder (${ort}) and ${workers} decoding worker threads (1 thread each; decode.workers ${JSON.stringify(config.decode.workers)}) take turns, so they never compete for the ${cores} core${cores === 1 ? '' : 's'}`;
}

/** Render and write one attention map; an image that cannot be read again becomes an error result (retried by --resume). */
async function drawAttentionMap(
  file: string | Buffer,
  o: { words: string[]; attention: Float32Array[]; grid: [number, number]; dir: string; maxPixels: number },
): Promise<{ file: string } | { error: string }> {
  let png: Buffer;
  try {
    png = await renderAttentionMap({
      image: await readImageFile(file),
      words: o.words,
      attention: o.attention,
      grid: o.grid,
      maxPixels: o.maxPixels,
    });
  } catch (e) {
    if (e instanceof ImageError) return { error: `cannot draw the attention map: ${e.reason}` };
    throw e;
  }
  const out = path.join(o.dir, attentionMapName(file)); // keyed on the raw path bytes
  await writeFileAtomic(out, png);
  return { file: out };
}
