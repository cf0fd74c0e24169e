// The `features` stage: encode every image of the prepared dataset once and store the vectors in the
// feature cache. Resumable (cached images are skipped), crash-safe (see cache.ts), shardable across
// processes (--shard i/n), and tolerant of bad images (skipped, listed, exit 3 at the end).
// Decoding of the next batch (sharp, on libuv threads) overlaps inference of the current one.
import * as path from 'node:path';
import { stagePaths } from '../config/load.js';
import { DECODER_FEATURES, type Config } from '../config/schema.js';
import { ConfigError, DataError, PartialFailure } from '../errors.js';
import { log, progress } from '../log.js';
import { loadPrepared, SPLITS } from '../prep/prepared.js';
import { shardOf } from '../util/shard.js';
import { openCacheWriter, prepareCacheFolder, type FailedImage, type FeaturesManifest } from './cache.js';
import { createEncoder, decodeFor } from './encoder.js';
import type { ImageEncoder } from './types.js';
import { ImageError } from './image.js';

export interface ImageItem {
  /** Key in the prepared dataset (and the cache). */
  image: string;
  /** Absolute path of the file. */
  file: string;
}

export interface FeaturesRunOptions {
  /** 1-based shard of the sorted image list. */
  shard?: { index: number; count: number };
  /** Encode at most this many images (after sharding; 0 or absent: all). */
  limit?: number;
  /** An encoder to use instead of creating one from config.encoder (tests, benchmarks). Not disposed. */
  encoder?: ImageEncoder;
  /** Stop after the current batch (what is done is kept); the command wires this to Ctrl-C. */
  signal?: AbortSignal;
}

export interface FeaturesResult {
  dir: string;
  /** Images this run was responsible for (after --shard and --limit). */
  total: number;
  /** Of those, already cached before the run. */
  alreadyCached: number;
  encoded: number;
  failed: FailedImage[];
  manifest: FeaturesManifest;
  /** True when stopped early by `signal`. */
  interrupted: boolean;
}

/** All images of the prepared dataset (every split), unique by key, sorted by key. */
export async function preparedImages(dir: string): Promise<ImageItem[]> {
  const prepared = await loadPrepared(dir);
  const imagesDir = prepared.manifest.imagesDir;
  if (!imagesDir)
    throw new DataError(
      `${path.join(dir, 'manifest.json')}: the prepared dataset names no images folder; set dataset.images and run \`captioner prep\` again`,
    );
  const byKey = new Map<string, ImageItem>();
  for (const s of SPLITS)
    for (const im of prepared.splits[s])
      if (!byKey.has(im.image)) byKey.set(im.image, { image: im.image, file: path.resolve(imagesDir, im.file) });
  return [...byKey.values()].sort((a, b) => (a.image < b.image ? -1 : a.image > b.image ? 1 : 0));
}

export async function runFeatures(config: Config, opts: FeaturesRunOptions = {}): Promise<FeaturesResult> {
  const paths = stagePaths(config);
  let items = await preparedImages(paths.prepared);
  const all = items.length;
  if (opts.shard) items = shardOf(items, opts.shard.index, opts.shard.count);
  if (opts.limit && opts.limit > 0) items = items.slice(0, opts.limit);
  const dir = paths.features;
  const fc = config.features;

  await prepareCacheFolder(dir); // an unusable --out fails now, not after building the encoder
  const encoder =
    opts.encoder ?? (await createEncoder(config.encoder, { threads: config.threads, backend: config.backend }));
  try {
    if (DECODER_FEATURES[config.model.type] === 'grid' && encoder.info.shape.length === 1) {
      // caught before hours of encoding: the decoder this config trains could not use these features
      const fix =
        config.encoder.type === 'onnx'
          ? `output "${encoder.info.layer}" of ${config.encoder.onnx?.path} gives one vector per image [${encoder.info.shape.join(', ')}]; set encoder.onnx.output to a grid or tokens output (\`captioner encoder inspect\` lists them), or model.type merge`
          : `encoder.layer ${encoder.info.layer} gives one vector per image [${encoder.info.shape.join(', ')}]; set encoder.layer block5_conv3 (14x14x512, the paper's) or block5_pool (7x7x512, faster), or model.type merge`;
      throw new ConfigError(`model.type ${config.model.type} attends over a grid of image positions, but ${fix}`);
    }
    const writer = await openCacheWriter(
      dir,
      { encoder: encoder.info, dtype: fc.dtype },
      { chunkBytes: fc.chunkBytes, chunkSize: fc.chunkSize },
    );
    const todo = items.filter((it) => !writer.has(it.image));
    const alreadyCached = items.length - todo.length;
    const scope = opts.shard
      ? `shard ${opts.shard.index}/${opts.shard.count} of ${all} images: ${items.length}`
      : `${items.length} images`;
    log.info(
      `features: ${scope}${opts.limit ? ` (limit ${opts.limit})` : ''}, ${alreadyCached} already cached, ${todo.length} to encode -> ${dir}\n` +
        `features: ${encoder.info.name} ${encoder.info.layer} [${encoder.info.shape.join('x')}] on ${encoder.info.detail}, batch ${fc.batchSize}, ${fc.dtype}`,
    );
    if (encoder.info.weights === 'random')
      log.warn('features: caching features of RANDOM (untrained) weights; the manifest records weights: random');

    const failed: FailedImage[] = [];
    let encoded = 0;
    const bar = progress('features', todo.length);
    const decode = (batch: ImageItem[]) =>
      Promise.all(
        batch.map((it) =>
          decodeFor(encoder, it.file).then(
            (rgb) => ({ it, rgb }),
            (e: unknown) => ({
              it,
              error: e instanceof ImageError ? e : new ImageError('corrupt', (e as Error).message),
            }),
          ),
        ),
      );
    const batches: ImageItem[][] = [];
    for (let i = 0; i < todo.length; i += fc.batchSize) batches.push(todo.slice(i, i + fc.batchSize));
    let lastFlush = Date.now();
    try {
      let next = batches.length ? decode(batches[0]) : null;
      for (let b = 0; b < batches.length; b++) {
        if (opts.signal?.aborted) break;
        const decoded = await next!;
        next = b + 1 < batches.length ? decode(batches[b + 1]) : null; // prefetch while this batch encodes
        const ok: { it: ImageItem; rgb: Uint8Array }[] = [];
        for (const d of decoded) {
          if ('rgb' in d) ok.push(d);
          else {
            const f: FailedImage = { image: d.it.image, file: d.it.file, reason: d.error.reason, kind: d.error.kind };
            failed.push(f);
            writer.fail(f);
            log.warn(`${d.it.file}: skipped: ${d.error.reason}`);
          }
        }
        if (ok.length) {
          const vecs = await encoder.encode(ok.map((d) => d.rgb));
          for (let i = 0; i < ok.length; i++) await writer.add(ok[i].it.image, vecs[i]);
          encoded += ok.length;
        }
        bar.tick(decoded.length, failed.length ? { failed: failed.length } : {});
        if (Date.now() - lastFlush > fc.checkpointSeconds * 1000 && writer.pending() > 0) {
          await writer.flush();
          lastFlush = Date.now();
        }
      }
    } finally {
      bar.stop();
      await writer.flush(); // keep whatever was computed, even when the encoder failed
    }
    const manifest = await writer.close();
    const interrupted = Boolean(opts.signal?.aborted) && alreadyCached + encoded + failed.length < items.length;
    log.info(
      `features: ${interrupted ? 'interrupted; ' : ''}encoded ${encoded}, skipped ${alreadyCached} cached, ${failed.length} failed; the cache holds ${manifest.count} images (${dir})` +
        (interrupted ? '; run the same command again to continue' : ''),
    );
    const result: FeaturesResult = { dir, total: items.length, alreadyCached, encoded, failed, manifest, interrupted };
    if (failed.length && !interrupted) {
      throw Object.assign(
        new PartialFailure(
          `${failed.length} of ${items.length} images could not be read (listed under "failed" in the feature cache manifest, ${dir}); the others were cached`,
        ),
        { result },
      );
    }
    return result;
  } finally {
    if (!opts.encoder) await encoder.dispose();
  }
}
