import { describe, expect, it } from 'vitest';
import { resolveShard, shardOf } from '../../src/util/shard.js';
import { UsageError } from '../../src/errors.js';

describe('resolveShard', () => {
  it('is null without --shard and parses i/n', () => {
    expect(resolveShard(undefined, undefined, {})).toBeNull();
    expect(resolveShard('2/4', undefined, {})).toMatchObject({ index: 2, count: 4 });
    expect(resolveShard('3/3', 3, {})).toMatchObject({ index: 3, count: 3 });
  });

  it('rejects bad specs and stray --shard-count', () => {
    for (const s of ['0/3', '4/3', 'x', '1/0', '-1/2', '1/2/3'])
      expect(() => resolveShard(s, undefined, {})).toThrow(UsageError);
    expect(() => resolveShard(undefined, 4, {})).toThrow(/needs --shard auto/);
    expect(() => resolveShard('1/2', 3, {})).toThrow(/--shard-count/);
    expect(() => resolveShard('auto', 0, { JOB_COMPLETION_INDEX: '0' })).toThrow(/positive/);
  });

  it('reads Slurm job arrays, whatever the first task id and step', () => {
    expect(
      resolveShard('auto', undefined, {
        SLURM_ARRAY_TASK_ID: '1',
        SLURM_ARRAY_TASK_COUNT: '4',
        SLURM_ARRAY_TASK_MIN: '1',
      }),
    ).toMatchObject({ index: 1, count: 4 });
    expect(
      resolveShard('auto', undefined, {
        SLURM_ARRAY_TASK_ID: '0',
        SLURM_ARRAY_TASK_COUNT: '4',
        SLURM_ARRAY_TASK_MIN: '0',
      }),
    ).toMatchObject({ index: 1, count: 4 });
    expect(
      resolveShard('auto', undefined, {
        SLURM_ARRAY_TASK_ID: '3',
        SLURM_ARRAY_TASK_COUNT: '4',
        SLURM_ARRAY_TASK_MIN: '0',
      }),
    ).toMatchObject({ index: 4, count: 4 });
    expect(
      resolveShard('auto', undefined, {
        SLURM_ARRAY_TASK_ID: '7',
        SLURM_ARRAY_TASK_COUNT: '4',
        SLURM_ARRAY_TASK_MIN: '5',
      }),
    ).toMatchObject({ index: 3, count: 4 });
    expect(
      resolveShard('auto', undefined, {
        SLURM_ARRAY_TASK_ID: '8',
        SLURM_ARRAY_TASK_COUNT: '4',
        SLURM_ARRAY_TASK_MIN: '0',
        SLURM_ARRAY_TASK_STEP: '4',
      }),
    ).toMatchObject({ index: 3, count: 4 });
    // no MIN exported (old Slurm): ids taken as 0-based
    expect(resolveShard('auto', undefined, { SLURM_ARRAY_TASK_ID: '2', SLURM_ARRAY_TASK_COUNT: '3' })).toMatchObject({
      index: 3,
      count: 3,
    });
    // --shard-count overrides the count
    expect(
      resolveShard('auto', 8, { SLURM_ARRAY_TASK_ID: '2', SLURM_ARRAY_TASK_COUNT: '3', SLURM_ARRAY_TASK_MIN: '1' }),
    ).toMatchObject({ index: 2, count: 8 });
  });

  it('refuses Slurm ids that do not map to a shard', () => {
    // --array=1,3,9: count 3, min 1, id 9 -> shard 9 of 3
    expect(() =>
      resolveShard('auto', undefined, {
        SLURM_ARRAY_TASK_ID: '9',
        SLURM_ARRAY_TASK_COUNT: '3',
        SLURM_ARRAY_TASK_MIN: '1',
      }),
    ).toThrow(/irregular/);
    expect(() =>
      resolveShard('auto', undefined, {
        SLURM_ARRAY_TASK_ID: '5',
        SLURM_ARRAY_TASK_COUNT: '3',
        SLURM_ARRAY_TASK_MIN: '0',
        SLURM_ARRAY_TASK_STEP: '2',
      }),
    ).toThrow(/does not fit/);
    expect(() => resolveShard('auto', undefined, { SLURM_ARRAY_TASK_ID: '1' })).toThrow(/SLURM_ARRAY_TASK_COUNT/);
    expect(() => resolveShard('auto', undefined, { SLURM_ARRAY_TASK_ID: 'x', SLURM_ARRAY_TASK_COUNT: '2' })).toThrow(
      /not an integer/,
    );
  });

  it('reads Kubernetes Indexed Jobs (0-based) with --shard-count', () => {
    expect(resolveShard('auto', 5, { JOB_COMPLETION_INDEX: '0' })).toMatchObject({ index: 1, count: 5 });
    expect(resolveShard('auto', 5, { JOB_COMPLETION_INDEX: '4' })).toMatchObject({ index: 5, count: 5 });
    expect(() => resolveShard('auto', 5, { JOB_COMPLETION_INDEX: '5' })).toThrow(/not below/);
    expect(() => resolveShard('auto', undefined, { JOB_COMPLETION_INDEX: '1' })).toThrow(/--shard-count/);
  });

  it('says what is missing for auto outside a scheduler', () => {
    expect(() => resolveShard('auto', undefined, {})).toThrow(/SLURM_ARRAY_TASK_ID.*JOB_COMPLETION_INDEX/);
  });

  it('shards from every task id cover the sorted input exactly once', () => {
    const items = Array.from({ length: 23 }, (_, i) => `img-${String(i).padStart(3, '0')}.jpg`);
    for (const [count, min] of [
      [1, 0],
      [4, 0],
      [4, 1],
      [7, 3],
      [30, 1],
    ]) {
      const slurm: string[] = [];
      const k8s: string[] = [];
      for (let t = 0; t < count; t++) {
        const s = resolveShard('auto', undefined, {
          SLURM_ARRAY_TASK_ID: String(min + t),
          SLURM_ARRAY_TASK_COUNT: String(count),
          SLURM_ARRAY_TASK_MIN: String(min),
        })!;
        slurm.push(...shardOf(items, s.index, s.count));
        const k = resolveShard('auto', count, { JOB_COMPLETION_INDEX: String(t) })!;
        k8s.push(...shardOf(items, k.index, k.count));
      }
      expect(slurm).toEqual(items);
      expect(k8s).toEqual(items);
    }
  });
});
