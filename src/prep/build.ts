// The pure core of prep: clean captions, apply the length limit, build the vocabulary from training
// captions, encode every caption, and collect the statistics the manifest reports. No I/O.
import { cleanTokens } from '../text/clean.js';
import { Vocab } from '../text/vocab.js';
import { ConfigError } from '../errors.js';
import { byCodePoint } from './split.js';
import { SPLITS, type BuildOptions, type LengthStats, type PreparedImage, type SplitName } from './prepared.js';

/** The options of the build; the prepared set's manifest records them (prepared.ts owns their type). */
export type { BuildOptions };

export interface SplitImage {
  image: string;
  file: string;
  captions: readonly string[];
  split: SplitName;
  /** Carried to the prepared image unchanged. */
  cocoId?: PreparedImage['cocoId'];
}

export interface BuildResult {
  vocab: Vocab;
  /** Sorted by image key. */
  splits: Record<SplitName, PreparedImage[]>;
  counts: Record<SplitName, { images: number; captions: number }>;
  /** Over kept captions of all splits, before truncation. */
  captionLength: LengthStats;
  truncated: number;
  dropped: { emptyCaptions: number; overLengthCaptions: number; imagesWithoutCaptions: number };
}

/** Nearest-rank percentile of sorted numbers (0 for none). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1];
}

export function lengthStats(lengths: readonly number[]): LengthStats {
  const s = [...lengths].sort((a, b) => a - b);
  return {
    p50: percentile(s, 50),
    p90: percentile(s, 90),
    p95: percentile(s, 95),
    p99: percentile(s, 99),
    max: s.length ? s[s.length - 1] : 0,
  };
}

export function checkBuildOptions(o: BuildOptions): void {
  if (o.maxLength < 3)
    throw new ConfigError(`prep.maxLength: must be at least 3 (start, one word, end), got ${o.maxLength}`);
  const specials = ['<pad>', o.unkToken, o.startToken, o.endToken];
  if (new Set(specials).size !== 4)
    throw new ConfigError(
      `prep: the start, end and unknown tokens must differ from each other and from "<pad>": ${specials
        .slice(1)
        .map((s) => JSON.stringify(s))
        .join(', ')}`,
    );
  for (const [k, v] of [
    ['startToken', o.startToken],
    ['endToken', o.endToken],
    ['unkToken', o.unkToken],
  ] as const) {
    if (v.trim() === '' || /\s/.test(v))
      throw new ConfigError(`prep.${k}: must be a non-empty word without spaces, got ${JSON.stringify(v)}`);
  }
}

export function buildPrepared(images: readonly SplitImage[], o: BuildOptions): BuildResult {
  checkBuildOptions(o);
  const maxWords = o.maxLength - 2;
  const lengths: number[] = [];
  let truncated = 0;
  const dropped = { emptyCaptions: 0, overLengthCaptions: 0, imagesWithoutCaptions: 0 };
  const kept: { im: SplitImage; captions: string[]; words: string[][] }[] = [];
  const counts = new Map<string, number>();
  for (const im of images) {
    const captions: string[] = [];
    const words: string[][] = [];
    for (const raw of im.captions) {
      let w = cleanTokens(raw, o);
      if (w.length === 0) {
        dropped.emptyCaptions++;
        continue;
      }
      lengths.push(w.length + 2);
      if (w.length > maxWords) {
        if (o.overLength === 'drop') {
          dropped.overLengthCaptions++;
          continue;
        }
        w = w.slice(0, maxWords);
        truncated++;
      }
      captions.push(raw);
      words.push(w);
      if (im.split === 'train') for (const t of w) counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    if (captions.length === 0) {
      dropped.imagesWithoutCaptions++;
      continue;
    }
    kept.push({ im, captions, words });
  }
  const vocab = Vocab.build(counts, o);
  if (counts.size > 0 && vocab.size <= 4) {
    // only the four special tokens: every caption would train on <unk> alone
    const [top, n] = [...counts].reduce((a, b) => (b[1] > a[1] ? b : a));
    throw new ConfigError(
      `prep.minCount: ${o.minCount} keeps no word in the vocabulary (the most frequent training word, ${JSON.stringify(top)}, occurs ${n} times); lower prep.minCount`,
    );
  }
  kept.sort((a, b) => byCodePoint(a.im.image, b.im.image));
  const splits: Record<SplitName, PreparedImage[]> = { train: [], val: [], test: [] };
  const splitCounts = {} as BuildResult['counts'];
  for (const s of SPLITS) splitCounts[s] = { images: 0, captions: 0 };
  for (const k of kept) {
    const s = k.im.split;
    const im: PreparedImage = {
      image: k.im.image,
      file: k.im.file,
      captions: k.captions,
      tokens: k.words.map((w) => vocab.encodeCaption(w)),
    };
    if (k.im.cocoId !== undefined) im.cocoId = k.im.cocoId;
    splits[s].push(im);
    splitCounts[s].images++;
    splitCounts[s].captions += k.captions.length;
  }
  return { vocab, splits, counts: splitCounts, captionLength: lengthStats(lengths), truncated, dropped };
}
