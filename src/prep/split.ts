// Train/val/test assignment by image (pure): from split lists (Flickr_8k.trainImages.txt ...), or by
// seeded ratios. The ratio split sorts the keys first, so it depends only on the set of keys and the
// seed, never on input order.
import { ConfigError, DataError } from '../errors.js';
import { rng, shuffleInPlace } from '../util/random.js';
import type { SplitName } from './prepared.js';

export interface SplitList {
  split: SplitName;
  file: string;
  /** Image names with their 1-based line numbers. */
  names: { name: string; line: number }[];
}

/** One image name a line; blank lines ignored, surrounding spaces trimmed. */
export function parseSplitList(text: string, file: string, split: SplitName): SplitList {
  const names: SplitList['names'] = [];
  const ls = (text.charCodeAt(0) === 0xfeff ? text.slice(1) : text).split(/\r\n|\n|\r/);
  ls.forEach((l, i) => {
    const name = l.trim();
    if (name !== '') names.push({ name, line: i + 1 });
  });
  return { split, file, names };
}

export interface Assignment {
  /** Key -> split, for the keys that got one. */
  split: Map<string, SplitName>;
  /** Names listed in split files that no caption mentions. */
  listedWithoutCaptions: string[];
}

/** Assign keys from split lists. A name in two different lists is an error; keys in no list get none. */
export function assignFromLists(keys: Iterable<string>, lists: readonly SplitList[]): Assignment {
  const listed = new Map<string, { split: SplitName; at: string }>();
  for (const l of lists) {
    for (const { name, line } of l.names) {
      const prev = listed.get(name);
      if (prev && prev.split !== l.split) {
        throw new DataError(
          `${l.file}:${line}: ${JSON.stringify(name)} is in the ${l.split} list but also in the ${prev.split} list (${prev.at})`,
        );
      }
      if (!prev) listed.set(name, { split: l.split, at: `${l.file}:${line}` });
    }
  }
  const split = new Map<string, SplitName>();
  for (const k of keys) {
    const s = listed.get(k);
    if (s) split.set(k, s.split);
  }
  const listedWithoutCaptions = [...listed.keys()].filter((n) => !split.has(n));
  return { split, listedWithoutCaptions };
}

/** Code-point order, independent of the locale. */
export const byCodePoint = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Seeded ratio split by image: sort the unique keys, shuffle with rng(seed), then cut at the rounded
 * cumulative ratios (normalised by their sum). Same keys + same seed = same split.
 */
export function assignByRatio(
  keys: Iterable<string>,
  ratios: Record<SplitName, number>,
  seed: number,
): Map<string, SplitName> {
  const sum = ratios.train + ratios.val + ratios.test;
  if (!(sum > 0)) throw new ConfigError('dataset.split.ratios: at least one ratio must be above 0');
  const sorted = [...new Set(keys)].sort(byCodePoint);
  shuffleInPlace(sorted, rng(seed));
  const n = sorted.length;
  const b1 = Math.round((n * ratios.train) / sum);
  const b2 = Math.round((n * (ratios.train + ratios.val)) / sum);
  const out = new Map<string, SplitName>();
  sorted.forEach((k, i) => out.set(k, i < b1 ? 'train' : i < b2 ? 'val' : 'test'));
  return out;
}
