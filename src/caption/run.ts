// `captioner caption`: discover the images, take this process's shard, skip what an earlier run of the
// same output already did (--resume), then stream every image through the pipeline (src/caption/
// pipeline.ts) and write one JSON line per image as soon as its batch is done. A file that cannot be
// captioned gets an error line and a warning; the run goes on and ends with PartialFailure (exit 3).
import { promises as fs } from 'node:fs';
import type { Config } from '../config/schema.js';
import { PartialFailure } from '../errors.js';
import { ImageError } from '../features/image.js';
import { log, progress } from '../log.js';
import { shardOf } from '../util/shard.js';
import { discoverImages, type Found } from './discover.js';
import { loadCaptioner, type LoadedCaptioner } from './load.js';
import { openOutputFile, resultLine, streamSink, type LineSink } from './output.js';
import { captionFiles, type CaptionStages } from './pipeline.js';
import type { Shard } from './shard.js';

export interface CaptionRunOptions {
  inputs: string[];
  model: string;
  output?: string;
  resume?: boolean;
  shard?: Shard | null;
  /** Files read and decoded concurrently (default 4). */
  readAhead?: number;
  /** Where `-` reads paths from (tests). */
  stdin?: NodeJS.ReadableStream;
  /** Where results go without --output (default process.stdout). */
  stdout?: NodeJS.WritableStream;
  /** Use these stages instead of loading `model` (tests). */
  stages?: CaptionStages;
}

export interface CaptionSummary {
  total: number;
  skipped: number;
  captioned: number;
  failed: number;
  seconds: number;
}

/** A human reason for a file that cannot be read. */
export function readFailure(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  switch (code) {
    case 'ENOENT':
      return 'file not found (removed or a broken link?)';
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
export async function readImageFile(file: string): Promise<Buffer> {
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

export async function runCaption(config: Config, opts: CaptionRunOptions): Promise<CaptionSummary> {
  const t0 = performance.now();
  let found: Found[] = await discoverImages(opts.inputs, { recursive: config.caption.recursive, extensions: config.caption.extensions.map((e) => e.toLowerCase().replace(/^\./, '')), stdin: opts.stdin });
  const total = found.length;
  if (opts.shard) {
    found = shardOf(found, opts.shard.index, opts.shard.count);
    log.info(`caption: shard ${opts.shard.index}/${opts.shard.count} (${opts.shard.source}): ${found.length} of ${total} images`);
  }
  let sink: LineSink;
  let skipped = 0;
  if (opts.output) {
    const out = await openOutputFile(opts.output, opts.resume ?? false);
    sink = out.sink;
    if (out.resumed.done.size) {
      const before = found.length;
      found = found.filter((f) => !out.resumed.done.has(f.path));
      skipped = before - found.length;
      log.info(`caption: --resume: ${skipped} images already in ${opts.output}, ${found.length} to go`);
    }
  } else sink = streamSink(opts.stdout ?? process.stdout);

  let captioner: LoadedCaptioner | null = null;
  let captioned = 0;
  let failed = 0;
  const bar = progress('caption', found.length);
  try {
    if (found.length === 0) {
      log.info('caption: nothing to do');
      return { total, skipped, captioned: 0, failed: 0, seconds: (performance.now() - t0) / 1000 };
    }
    let stages = opts.stages;
    if (!stages) {
      captioner = await loadCaptioner(opts.model, { config });
      log.info(`caption: model ${captioner.info.name}, encoder ${captioner.info.encoder}, backend ${captioner.info.backend}, beam ${captioner.decode.beam}`);
      stages = stagesOf(captioner);
    }
    const results = captionFiles(found, stages, {
      readAhead: opts.readAhead ?? 4,
      encodeBatch: config.caption.batchSize,
      decodeBatch: config.decode.batchSize,
    });
    for await (const r of results) {
      await sink.write(resultLine(r));
      if ('error' in r) {
        failed++;
        log.warn(`${r.image}: ${r.error}`);
      } else captioned++;
      bar.tick(1, failed ? { failed } : {});
    }
  } finally {
    bar.stop();
    await sink.close();
    await captioner?.dispose();
  }
  const seconds = (performance.now() - t0) / 1000;
  const done = captioned + failed;
  log.info(`caption: ${captioned} captioned, ${failed} failed${skipped ? `, ${skipped} skipped (resume)` : ''} in ${seconds.toFixed(1)} s (${(done / Math.max(seconds, 1e-9)).toFixed(1)} img/s)`);
  if (failed) throw new PartialFailure(`${failed} of ${done} images could not be captioned (see the "error" lines)`);
  return { total, skipped, captioned, failed, seconds };
}
