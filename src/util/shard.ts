// Deterministic disjoint sharding of a work list (`--shard i/n`), shared by `features` and `caption`.
import { UsageError } from '../errors.js';

/**
 * The i-th of n contiguous, near-equal parts of `items` (1-based i). Deterministic for a given list
 * order (callers sort first); the union of shards 1..n is `items`, each element exactly once.
 * Part sizes differ by at most one (the first `len % n` parts get the extra element).
 */
export function shardOf<T>(items: readonly T[], i: number, n: number): T[] {
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--shard: the shard count must be a positive integer, got ${n}`);
  if (!Number.isInteger(i) || i < 1 || i > n) throw new UsageError(`--shard: the shard index must be between 1 and ${n}, got ${i}`);
  const base = Math.floor(items.length / n);
  const extra = items.length % n;
  const start = (i - 1) * base + Math.min(i - 1, extra);
  const len = base + (i - 1 < extra ? 1 : 0);
  return items.slice(start, start + len);
}

/** Parse "i/n" (1-based) as given to --shard. */
export function parseShard(spec: string): { index: number; count: number } {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(spec);
  if (!m) throw new UsageError(`--shard: expected i/n (e.g. 2/4), got "${spec}"`);
  const index = Number(m[1]);
  const count = Number(m[2]);
  if (count < 1) throw new UsageError(`--shard: the shard count must be at least 1, got "${spec}"`);
  if (index < 1 || index > count) throw new UsageError(`--shard: the shard index must be between 1 and ${count}, got "${spec}"`);
  return { index, count };
}
