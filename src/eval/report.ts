// The eval report (pure, no I/O): what report.json holds, and the metrics table printed on stdout.
// report.json = settings (model, dataset, features, split, decode, tokenize), corpus metrics, the
// image-blind baseline (report-baseline.ts) and one entry per image with its caption, references and
// per-image scores. report-html.ts renders the same object as a page. Also the entries of results.json.
import type { DecodeConfig } from '../config/schema.js';
import type { PreparedImage } from '../prep/prepared.js';
import { metricKeys, type CorpusScores, type Scores } from './score.js';
import type { Baseline } from './report-baseline.js';

export const EVAL_REPORT_KIND = 'captioner.eval';

/** One decoded image. */
export interface Prediction {
  image: string;
  /** Path under the dataset's images folder. */
  file: string;
  caption: string;
  logprob: number;
  /** Raw reference captions. */
  references: string[];
}

export interface PerImage extends Prediction {
  Bleu_4: number;
  CIDEr: number;
  ROUGE_L: number;
}

export interface EvalReport {
  kind: typeof EVAL_REPORT_KIND;
  version: 1;
  createdAt: string;
  model: { dir: string; name: string; which: 'best' | 'last' };
  dataset: { dir: string; fingerprint: string; imagesDir: string | null };
  features: { dir: string; fingerprint: string; weights: string; layer: string };
  split: string;
  decode: DecodeConfig;
  tokenize: string;
  /** Corpus scores (coco-caption keys; CIDEr is CIDEr-D). */
  metrics: CorpusScores;
  /** The best constant caption (chosen on the training split) given to every image; absent when skipped. */
  baseline?: Baseline;
  seconds: number;
  /** In evaluation order (the split's key order). */
  perImage: PerImage[];
}

export interface ReportInput {
  createdAt: string;
  model: EvalReport['model'];
  dataset: EvalReport['dataset'];
  features: EvalReport['features'];
  split: string;
  decode: DecodeConfig;
  tokenize: string;
  scores: Scores;
  predictions: Prediction[];
  baseline?: Baseline;
  seconds: number;
}

const round = (v: number, d = 6) => Number(v.toFixed(d));

export function buildReport(r: ReportInput): EvalReport {
  const { perImage, ...corpus } = r.scores;
  if (perImage.length !== r.predictions.length)
    throw new Error(`buildReport: ${perImage.length} scores for ${r.predictions.length} predictions`);
  return {
    kind: EVAL_REPORT_KIND,
    version: 1,
    createdAt: r.createdAt,
    model: r.model,
    dataset: r.dataset,
    features: r.features,
    split: r.split,
    decode: r.decode,
    tokenize: r.tokenize,
    metrics: corpus,
    ...(r.baseline ? { baseline: r.baseline } : {}),
    seconds: round(r.seconds, 2),
    perImage: r.predictions.map((p, i) => ({
      ...p,
      logprob: round(p.logprob),
      Bleu_4: round(perImage[i].Bleu_4),
      CIDEr: round(perImage[i].CIDEr),
      ROUGE_L: round(perImage[i].ROUGE_L),
    })),
  };
}

/** One entry of results.json (COCO results format). */
export interface CocoResult {
  image_id: number | string;
  caption: string;
}

/**
 * results.json's entries: each prediction under its image's COCO id when the prepared set records one
 * (COCO and Karpathy COCO sources: what pycocotools' loadRes matches against the annotation file's
 * images[].id), else under its image key (file name: Flickr, csv, sets prepared before ids were kept).
 * Decided per image, so a set where only some images have ids still names every image; `captioner
 * score` reads both.
 */
export function cocoResults(
  predictions: readonly Pick<Prediction, 'image' | 'caption'>[],
  images: readonly Pick<PreparedImage, 'image' | 'cocoId'>[],
): CocoResult[] {
  const ids = new Map(images.map((im) => [im.image, im.cocoId]));
  return predictions.map((p) => ({ image_id: ids.get(p.image) ?? p.image, caption: p.caption }));
}

export const metricLabel = (k: (typeof metricKeys)[number]): string =>
  k === 'CIDEr' ? 'CIDEr-D' : k.replace('Bleu_', 'BLEU-');

/**
 * The metrics table for stdout: one metric a line, the model's score and (when given) the image-blind
 * baseline's beside it.
 */
export function formatMetricsTable(
  metrics: CorpusScores,
  opts: { baseline?: CorpusScores; title?: string } = {},
): string {
  const rows: string[][] = [['metric', opts.title ?? 'model', ...(opts.baseline ? ['image-blind'] : [])]];
  rows.push(['images', String(metrics.images), ...(opts.baseline ? [String(opts.baseline.images)] : [])]);
  for (const k of metricKeys)
    rows.push([metricLabel(k), metrics[k].toFixed(4), ...(opts.baseline ? [opts.baseline[k].toFixed(4)] : [])]);
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return (
    rows
      .map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  '))
      .join('\n') + '\n'
  );
}
