// The eval stage: caption one split of the prepared dataset a run was trained on, from that run's
// feature cache, and score the captions against the raw reference captions. Writes to the report
// folder (default <run>/eval-<split>):
//   predictions.jsonl  {"image", "caption", "logprob"} one image a line (the `caption` command's format)
//   results.json       COCO results [{"image_id", "caption"}] (for coco-caption / `captioner score`)
//   report.json        metrics, the image-blind baseline, settings and per-image scores (report.ts)
//   report.html        the same as a page with thumbnails (report-html.ts); for an attention model each
//                      row also gets its interactive attention view (the rows stay out of report.json)
// The dataset and the cache are the ones the run's manifest records (unless prep.out / features.out
// name others); a dataset or cache whose fingerprint differs from what the model was trained on is refused.
import { promises as fs } from 'node:fs';
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { stagePaths } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { attentionGridOf } from '../view/attention-map.js';
import type { DecodedCaption } from '../decode/decode.js';
import { abortError, resolveDecodeWorkers, startDecoder, type BatchDecoder } from '../decode/pool.js';
import { DataError } from '../errors.js';
import { openFeatureCache, type FeatureCache } from '../features/cache.js';
import { log, progress } from '../log.js';
import { loadTrainedModel, type TrainedModel } from '../model/runfolder.js';
import { loadPrepared, type Prepared, type PreparedImage, type SplitName } from '../prep/prepared.js';
import { initBackend, type BackendRequest } from '../tf/backend.js';
import { ensureDir, writeFileAtomic, writeJsonAtomic } from '../util/fsx.js';
import { checkStageFolder } from '../util/stagedir.js';
import { imageBlindBaseline } from './report-baseline.js';
import { renderReportHtml, type ImageAttention } from './report-html.js';
import { buildReport, cocoResults, EVAL_REPORT_KIND, type EvalReport, type Prediction } from './report.js';
import { scoreCaptions } from './score.js';

export interface EvalOptions {
  /** Run folder written by `captioner train` (default: stagePaths(config).model). */
  model?: string;
  /** Checkpoint to evaluate (default best). */
  which?: 'best' | 'last';
  /** Skip the image-blind baseline (it costs a few scorings of the training split). */
  noBaseline?: boolean;
  /** Skip thumbnails in report.html (the page says so once). */
  noThumbnails?: boolean;
  /** Abort: stop decoding (between batches; the decoding workers at once) and reject with an AbortError; nothing is written. */
  signal?: AbortSignal;
}

export interface EvalFiles {
  dir: string;
  predictions: string;
  results: string;
  report: string;
  html: string;
}

export interface EvalResult {
  report: EvalReport;
  files: EvalFiles;
}

const exists = (p: string) =>
  fs.stat(p).then(
    () => true,
    () => false,
  );

/** The fingerprint in `dir`/manifest.json, or undefined. */
async function fingerprintOf(dir: string): Promise<string | undefined> {
  try {
    return (JSON.parse(await fs.readFile(path.join(dir, 'manifest.json'), 'utf8')) as { fingerprint?: string })
      .fingerprint;
  } catch {
    return undefined;
  }
}

/**
 * Where a run's prepared dataset or feature cache is: the config's explicit choice (prep.out / features.out),
 * else what the run recorded. When the recorded folder is gone, the default folder is taken only if it holds
 * the very artifact (same fingerprint); otherwise the error names the recorded folder, never a default the
 * user may never have used.
 */
async function locate(
  what: string,
  explicit: string | undefined,
  recorded: string | undefined,
  fingerprint: string | undefined,
  fallback: string,
  setting: string,
  runDir: string,
): Promise<string> {
  if (explicit) return explicit;
  if (!recorded) return fallback;
  if (await exists(recorded)) return recorded;
  if (
    fingerprint &&
    path.resolve(fallback) !== path.resolve(recorded) &&
    (await fingerprintOf(fallback)) === fingerprint
  ) {
    log.info(
      `eval: ${recorded} (the ${what} ${runDir} records) is gone; using ${fallback}, which holds the same one (fingerprint ${fingerprint.slice(0, 12)})`,
    );
    return fallback;
  }
  throw new DataError(
    `${recorded}: the ${what} that ${runDir} was trained on is not there any more (moved or deleted?); give its new place with --set ${setting}=DIR`,
  );
}

/** Open the run's prepared dataset, refusing one that is not what the model was trained on. */
export async function preparedForRun(config: Config, model: TrainedModel): Promise<Prepared> {
  const want = model.manifest.dataset?.fingerprint;
  const dir = await locate(
    'prepared dataset',
    config.prep.out,
    model.manifest.dataset?.dir,
    want,
    stagePaths(config).prepared,
    'prep.out',
    model.dir,
  );
  const prepared = await loadPrepared(dir);
  if (want && prepared.manifest.fingerprint !== want) {
    throw new DataError(
      `${dir}: this prepared dataset is not the one ${model.dir} was trained on (fingerprint ${prepared.manifest.fingerprint.slice(0, 12)}, the model records ${want.slice(0, 12)}); ` +
        `evaluate with the dataset of the run${model.manifest.dataset?.dir ? ` (${model.manifest.dataset.dir})` : ''} or train again`,
    );
  }
  return prepared;
}

/** Open the run's feature cache, refusing one whose fingerprint differs from the model's training features. */
export async function featuresForRun(config: Config, model: TrainedModel): Promise<FeatureCache> {
  const rec = model.manifest.features;
  const dir = await locate(
    'feature cache',
    config.features.out,
    rec?.dir,
    rec?.fingerprint,
    stagePaths(config).features,
    'features.out',
    model.dir,
  );
  return openFeatureCache(dir, {
    fingerprint: rec?.fingerprint,
    shape: Array.isArray(rec?.shape) ? rec.shape : undefined,
  });
}

/** The images of `split` to evaluate (first `limit` by key; 0 = all), each with at least one reference. */
export function evalImages(prepared: Prepared, split: SplitName, limit: number): PreparedImage[] {
  const all = prepared.splits[split].filter((im) => im.captions.some((c) => c.trim() !== ''));
  if (!all.length)
    throw new DataError(
      `${prepared.dir}: the ${split} split has no images with captions to evaluate${split === 'test' ? ' (try --split val)' : ''}`,
    );
  return limit > 0 ? all.slice(0, limit) : all;
}

export async function runEval(config: Config, opts: EvalOptions = {}): Promise<EvalResult> {
  const started = Date.now();
  const runDir = opts.model ?? stagePaths(config).model;
  const split = config.eval.split;
  const decodeCfg = config.decode;
  const backend = await initBackend(config.backend as BackendRequest, { threads: config.threads, quiet: true });
  const model = await loadTrainedModel(runDir, opts.which ?? 'best');
  let cache: FeatureCache | undefined;
  let decoder: BatchDecoder | undefined;
  try {
    const prepared = await preparedForRun(config, model);
    cache = await featuresForRun(config, model);
    const images = evalImages(prepared, split, config.eval.limit);
    // the report folder is checked (not another stage's artifact) and created now, not after decoding
    const dir = config.eval.out ?? path.join(runDir, `eval-${split}`);
    await checkStageFolder(dir, { kind: EVAL_REPORT_KIND, option: '--out or eval.out' });
    await ensureDir(dir);
    const missing = images.filter((im) => !cache!.has(im.image));
    if (missing.length) {
      throw new DataError(
        `${cache.dir}: the feature cache has no vectors for ${missing.length} of ${images.length} ${split} images (e.g. ${missing
          .slice(0, 5)
          .map((m) => m.image)
          .join(', ')}); ` + 'run `captioner features` for this prepared dataset',
      );
    }
    if (cache.manifest.weights === 'random')
      log.warn(`eval: ${runDir} was trained on features of an UNTRAINED (random-weight) VGG16; expect low scores`);
    log.info(
      `eval: ${images.length} ${split} images of ${prepared.dir}, model ${runDir} (${opts.which ?? 'best'}), beam ${decodeCfg.beam}, ${backend.detail.split(' (')[0]}`,
    );

    // decode: batches of decode.batchSize, spread over decode.workers threads, consumed in order
    const predictions: Prediction[] = [];
    const grid = attentionGridOf(model.manifest);
    const attention = new Map<string, ImageAttention>(); // image -> where the model looked, for report.html
    const bs = decodeCfg.batchSize;
    const workers = resolveDecodeWorkers(decodeCfg.workers, {
      backend: backend.name,
      batches: Math.ceil(images.length / bs),
    });
    decoder = await startDecoder(model, { workers, signal: opts.signal, mainBackend: backend.detail.split(' (')[0] });
    if (decoder.workers > 1)
      log.info(
        `eval: decoding in ${decoder.workers} worker threads x 1 ${decoder.backend} thread each (decode.workers ${JSON.stringify(decodeCfg.workers)}, ${availableParallelism()} cores)`,
      );
    const bar = progress('eval', images.length);
    const inFlight: Promise<DecodedCaption[]>[] = [];
    const window = decoder.workers > 1 ? 2 * decoder.workers : 1; // batches queued ahead, so no worker waits
    let next = 0;
    const submit = () => {
      const batch = images.slice(next, next + bs);
      next += bs;
      const p = decoder!.decode(
        batch.map((im) => cache!.get(im.image)),
        { ...decodeCfg, attention: grid !== null },
      );
      p.catch(() => {}); // awaited in order below
      inFlight.push(p);
    };
    try {
      for (let i = 0; i < images.length; i += bs) {
        if (opts.signal?.aborted) throw abortError(opts.signal);
        while (inFlight.length < window && next < images.length) submit();
        const batch = images.slice(i, i + bs);
        const decoded = await inFlight.shift()!;
        batch.forEach((im, k) => {
          const rows = decoded[k].attention;
          if (rows) attention.set(im.image, { words: decoded[k].words, rows });
        });
        batch.forEach((im, k) =>
          predictions.push({
            image: im.image,
            file: im.file,
            caption: decoded[k].caption,
            logprob: decoded[k].logprob,
            references: im.captions,
          }),
        );
        bar.tick(batch.length);
      }
    } finally {
      bar.stop();
      await decoder.dispose(); // also ends the workers of batches still queued after a failure
    }

    // score
    const tokenize = config.eval.tokenize;
    const scores = scoreCaptions(
      predictions.map((p) => ({ id: p.image, candidate: p.caption, references: p.references })),
      tokenize,
    );
    const baseline = opts.noBaseline
      ? undefined
      : imageBlindBaseline(
          prepared.splits.train,
          predictions.map((p) => p.references),
          tokenize,
        );
    const decodeSeconds = (Date.now() - started) / 1000;
    const report = buildReport({
      createdAt: new Date().toISOString(),
      model: { dir: path.resolve(runDir), name: model.manifest.name, which: opts.which ?? 'best' },
      dataset: {
        dir: path.resolve(prepared.dir),
        fingerprint: prepared.manifest.fingerprint,
        imagesDir: prepared.manifest.imagesDir,
      },
      features: {
        dir: path.resolve(cache.dir),
        fingerprint: cache.manifest.fingerprint,
        weights: cache.manifest.weights,
        layer: cache.manifest.layer,
      },
      split,
      decode: decodeCfg,
      tokenize,
      scores,
      predictions,
      baseline,
      seconds: decodeSeconds,
    });

    // write
    const files: EvalFiles = {
      dir,
      predictions: path.join(dir, 'predictions.jsonl'),
      results: path.join(dir, 'results.json'),
      report: path.join(dir, 'report.json'),
      html: path.join(dir, 'report.html'),
    };
    await writeFileAtomic(
      files.predictions,
      predictions
        .map(
          (p) => JSON.stringify({ image: p.image, caption: p.caption, logprob: Number(p.logprob.toFixed(6)) }) + '\n',
        )
        .join(''),
    );
    await writeFileAtomic(files.results, JSON.stringify(cocoResults(predictions, images)) + '\n');
    await writeJsonAtomic(files.report, report);
    await writeFileAtomic(
      files.html,
      await renderReportHtml(report, {
        imagesDir: prepared.manifest.imagesDir,
        reportDir: files.dir,
        thumbnails: !opts.noThumbnails,
        ...(grid ? { attention: { grid, byImage: attention } } : {}),
      }),
    );
    log.info(
      `eval: wrote ${files.predictions}, ${files.results}, ${files.report}, ${files.html} (${((Date.now() - started) / 1000).toFixed(1)}s)`,
    );
    return { report, files };
  } finally {
    await decoder?.dispose();
    cache?.close();
    model.decoder.dispose();
  }
}
