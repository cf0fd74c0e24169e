// `captioner caption`: discover the images, take this process's shard, skip what an earlier run of the
// same output already captioned (--resume; its failed images are retried), then stream every image
// through the pipeline (src/caption/pipeline.ts) and write one JSON line per image as soon as it is done.
// A file that cannot be captioned gets an error line and a warning; the run goes on and ends with
// PartialFailure (exit 3). An abort (Ctrl-C) stops after the lines already done, leaving the output
// valid; a closed stdout (`| head`) ends the run quietly (OutputClosed).
import { promises as fs } from 'node:fs';
import type { Config } from '../config/schema.js';
import { PartialFailure } from '../errors.js';
import { ImageError } from '../features/image.js';
import { log, progress } from '../log.js';
import { shardOf, type Shard } from '../util/shard.js';
import { discoverImages, type Found } from './discover.js';
import { loadCaptioner, type LoadedCaptioner } from './load.js';
import { openOutputFile, readOutputState, resultLine, resultText, streamSink, type LineSink, type OutputFormat } from './output.js';
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
  /** Where `-` reads paths from (tests). */
  stdin?: NodeJS.ReadableStream;
  /** Where results go without --output (default process.stdout). */
  stdout?: NodeJS.WritableStream;
  /** Use these stages instead of loading `model` (tests). */
  stages?: CaptionStages;
  /** Aborted (Ctrl-C): stop after the lines already written; the summary says `interrupted`. */
  signal?: AbortSignal;
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
    if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: st.isDirectory() ? 'EISDIR' : 'ENOTREG' });
    return await fs.readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOTREG') throw new ImageError('unsupported', 'not a regular file');
    throw new ImageError('corrupt', readFailure(e));
  }
}

export function stagesOf(c: LoadedCaptioner): CaptionStages {
  return {
    load: async (file) => c.prepare(await readImageFile(file)),
    encode: (images) => c.encode(images),
    caption: (features) => c.captionFeatures(features),
  };
}

/** "3 files with other extensions passed over (.txt 2, .heic 1)", or '' when none. */
export function ignoredNote(ignored: Record<string, number>): string {
  const entries = Object.entries(ignored).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  const n = entries.reduce((s, [, c]) => s + c, 0);
  if (!n) return '';
  return `${n} file${n === 1 ? '' : 's'} with other extensions passed over (${entries.map(([e, c]) => `${e} ${c}`).join(', ')}; see caption.extensions)`;
}

export async function runCaption(config: Config, opts: CaptionRunOptions): Promise<CaptionSummary> {
  const t0 = performance.now();
  const skippedFiles = new Map<string, number>();
  let found: Found[] = await discoverImages(opts.inputs, { recursive: config.caption.recursive, extensions: config.caption.extensions.map((e) => e.toLowerCase().replace(/^\./, '')), stdin: opts.stdin, skipped: skippedFiles });
  const ignored = Object.fromEntries(skippedFiles);
  const total = found.length;
  if (opts.shard) {
    found = shardOf(found, opts.shard.index, opts.shard.count);
    log.info(`caption: shard ${opts.shard.index}/${opts.shard.count} (${opts.shard.source}): ${found.length} of ${total} images`);
  }
  let sink: LineSink;
  let skipped = 0;
  if (opts.output) {
    const state = await readOutputState(opts.output, opts.resume ?? false);
    const retry = new Set(found.filter((f) => state.failed.has(f.path)).map((f) => f.path));
    if (state.done.size) {
      const before = found.length;
      found = found.filter((f) => !state.done.has(f.path));
      skipped = before - found.length;
    }
    if (state.lines.length) log.info(`caption: --resume: ${skipped} images already captioned in ${opts.output}, ${retry.size} failed before and retried, ${found.length} to go`);
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
    return { total, skipped, captioned: 0, failed: 0, seconds: (performance.now() - t0) / 1000, ignored, interrupted: false };
  }
  const bar = progress('caption', found.length);
  try {
    let stages = opts.stages;
    if (!stages && !aborted()) {
      captioner = await loadCaptioner(opts.model, { config });
      log.info(`caption: model ${captioner.info.name}, encoder ${captioner.info.encoder}, backend ${captioner.info.backend}, beam ${captioner.decode.beam}`);
      stages = stagesOf(captioner);
    }
    if (stages && !aborted()) {
      const results = captionFiles(found, stages, {
        readAhead: opts.readAhead ?? 4,
        encodeBatch: config.caption.batchSize,
        decodeBatch: config.decode.batchSize,
      });
      for await (const r of results) {
        if (aborted()) break; // a result finished after Ctrl-C (maybe cut short by it) is not written
        const line = opts.format === 'text' ? resultText(r) : resultLine(r);
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
    bar.stop();
    await sink.close().catch(() => {}); // the first error is the news
    await captioner?.dispose().catch(() => {});
    throw e;
  }
  bar.stop();
  await sink.close();
  await captioner?.dispose();
  const seconds = (performance.now() - t0) / 1000;
  const done = captioned + failed;
  const note = ignoredNote(ignored);
  log.info(`caption: ${captioned} captioned, ${failed} failed${skipped ? `, ${skipped} skipped (resume)` : ''}${interrupted ? `, ${found.length - done} left (interrupted)` : ''} in ${seconds.toFixed(1)} s (${(done / Math.max(seconds, 1e-9)).toFixed(1)} img/s)${note ? `; ${note}` : ''}`);
  if (failed && !interrupted) throw new PartialFailure(`${failed} of ${done} images could not be captioned (see the "error" lines)`);
  return { total, skipped, captioned, failed, seconds, ignored, interrupted };
}
