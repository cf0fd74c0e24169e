// Deterministic disjoint sharding of a work list (`--shard i/n`), shared by `features` and `caption`.
// Which part this process takes: `--shard i/n` (1-based), or `--shard auto`, which reads the index and
// count from the scheduler. Pure: flags and environment in, {index, count} out.
//  - Slurm job arrays: SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT, and SLURM_ARRAY_TASK_MIN /
//    SLURM_ARRAY_TASK_STEP (ids need not start at 0 or 1: `--array=5-8` gives ids 5..8 -> shards 1..4;
//    `--array=0-12:4` gives 0,4,8,12 -> 1..4). An irregular id list (`--array=1,3,9`) cannot be mapped
//    to contiguous shards, which is reported.
//  - Kubernetes Indexed Jobs: JOB_COMPLETION_INDEX (0-based); the count comes from --shard-count
//    (the job's `completions`), since Kubernetes does not export it.
// --shard-count, when given with auto, overrides the count the environment reports.
import { UsageError } from '../errors.js';

/**
 * The i-th of n contiguous, near-equal parts of `items` (1-based i). Deterministic for a given list
 * order (callers sort first); the union of shards 1..n is `items`, each element exactly once.
 * Part sizes differ by at most one (the first `len % n` parts get the extra element).
 */
export function shardOf<T>(items: readonly T[], i: number, n: number): T[] {
  if (!Number.isInteger(n) || n < 1)
    throw new UsageError(`--shard: the shard count must be a positive integer, got ${n}`);
  if (!Number.isInteger(i) || i < 1 || i > n)
    throw new UsageError(`--shard: the shard index must be between 1 and ${n}, got ${i}`);
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
  if (index < 1 || index > count)
    throw new UsageError(`--shard: the shard index must be between 1 and ${count}, got "${spec}"`);
  return { index, count };
}

export interface Shard {
  /** 1-based. */
  index: number;
  count: number;
  /** Where the numbers came from, for the log. */
  source: string;
}

type Env = Record<string, string | undefined>;

function envInt(env: Env, name: string, min: number): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  const n = Number(raw.trim());
  if (!Number.isInteger(n) || n < min)
    throw new UsageError(`--shard auto: ${name}=${JSON.stringify(raw)} is not an integer >= ${min}`);
  return n;
}

function checkCount(count: number | undefined, what: string): number {
  if (count === undefined) throw new UsageError(`--shard auto: ${what}`);
  if (!Number.isInteger(count) || count < 1)
    throw new UsageError(`--shard-count must be a positive integer, got ${count}`);
  return count;
}

/**
 * Resolve `--shard` / `--shard-count` against the environment. Returns null when no sharding was asked for.
 * Throws UsageError for malformed values, an index outside 1..count, or `auto` without a scheduler.
 */
export function resolveShard(
  spec: string | undefined,
  shardCount: number | undefined,
  env: Env = process.env,
): Shard | null {
  if (spec === undefined) {
    if (shardCount !== undefined) throw new UsageError('--shard-count needs --shard auto');
    return null;
  }
  if (shardCount !== undefined && (!Number.isInteger(shardCount) || shardCount < 1))
    throw new UsageError(`--shard-count must be a positive integer, got ${shardCount}`);
  if (spec.trim().toLowerCase() !== 'auto') {
    const { index, count } = parseShard(spec);
    if (shardCount !== undefined && shardCount !== count)
      throw new UsageError(
        `--shard ${spec} says ${count} shards but --shard-count says ${shardCount}; --shard-count is for --shard auto`,
      );
    return { index, count, source: '--shard' };
  }
  const slurmId = envInt(env, 'SLURM_ARRAY_TASK_ID', 0);
  if (slurmId !== undefined) {
    const min = envInt(env, 'SLURM_ARRAY_TASK_MIN', 0) ?? 0;
    const step = envInt(env, 'SLURM_ARRAY_TASK_STEP', 1) ?? 1;
    const count = checkCount(
      shardCount ?? envInt(env, 'SLURM_ARRAY_TASK_COUNT', 1),
      'SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; give --shard-count N',
    );
    const offset = slurmId - min;
    if (offset < 0 || offset % step !== 0) {
      throw new UsageError(
        `--shard auto: Slurm task id ${slurmId} does not fit the array (min ${min}, step ${step}); use a regular --array range or give --shard i/n`,
      );
    }
    const index = offset / step + 1;
    if (index > count) {
      throw new UsageError(
        `--shard auto: Slurm task id ${slurmId} is shard ${index} of only ${count} (an irregular --array list?); use a regular range such as --array=1-${count} or give --shard i/n`,
      );
    }
    return {
      index,
      count,
      source: `Slurm array task ${slurmId} (min ${min}${step > 1 ? `, step ${step}` : ''}, count ${count})`,
    };
  }
  const k8s = envInt(env, 'JOB_COMPLETION_INDEX', 0);
  if (k8s !== undefined) {
    const count = checkCount(
      shardCount,
      "JOB_COMPLETION_INDEX is set (Kubernetes Indexed Job) but the shard count is unknown; give --shard-count N (the job's completions)",
    );
    if (k8s >= count)
      throw new UsageError(`--shard auto: JOB_COMPLETION_INDEX ${k8s} is not below --shard-count ${count}`);
    return { index: k8s + 1, count, source: `Kubernetes completion index ${k8s} of ${count}` };
  }
  throw new UsageError(
    '--shard auto: neither SLURM_ARRAY_TASK_ID (Slurm job array) nor JOB_COMPLETION_INDEX (Kubernetes Indexed Job) is set; give --shard i/n',
  );
}
