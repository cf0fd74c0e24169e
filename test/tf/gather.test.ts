// The heap-view GatherV2 and Tile kernels for wasm (src/tf/kernels/GatherV2.ts, Tile.ts) give the cpu backend's
// answers for every axis / reps pattern, dtype and empty case, throw cpu's error for an
// out-of-range index, carry gradients, and leave no tensors behind.
import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../../src/tf/tf.js';
import { initBackend } from '../../src/tf/backend.js';
import { rng } from '../../src/util/random.js';

const cpu = () => initBackend('cpu', { quiet: true });
const wasm = () => initBackend('wasm', { quiet: true });

interface Result {
  shape: number[];
  dtype: string;
  values: number[];
}

/** Run f on cpu, then on wasm (checking no tensor is left behind); returns both results. */
async function onBoth(f: () => tf.Tensor): Promise<[Result, Result]> {
  const run = (): Result => {
    const before = tf.memory().numTensors;
    const t = tf.tidy(f);
    const r = { shape: t.shape, dtype: t.dtype, values: Array.from(t.dataSync() as ArrayLike<number>) };
    t.dispose();
    expect(tf.memory().numTensors).toBe(before);
    return r;
  };
  await cpu();
  const c = run();
  await wasm();
  return [c, run()];
}

async function expectSame(f: () => tf.Tensor): Promise<Result> {
  const [c, w] = await onBoth(f);
  expect(w.shape).toEqual(c.shape);
  expect(w.dtype).toBe(c.dtype);
  expect(w.values).toEqual(c.values);
  return w;
}

function values(r: () => number, n: number, dtype: 'float32' | 'int32' | 'bool'): number[] {
  return Array.from({ length: n }, () =>
    dtype === 'float32' ? r() * 2 - 1 : dtype === 'int32' ? Math.floor(r() * 2001) - 1000 : r() < 0.5 ? 1 : 0,
  );
}

const size = (shape: number[]) => shape.reduce((p, d) => p * d, 1);

beforeAll(async () => {
  await wasm();
});

describe('wasm GatherV2 (heap views)', () => {
  const r = rng(5);
  const shapes = [[7], [5, 6], [3, 4, 5], [2, 3, 4, 5], [4, 20], [3, 2, 17], [6, 40]];
  for (const shape of shapes) {
    it(`gather from [${shape}] along every axis (positive and negative) matches cpu`, async () => {
      const rank = shape.length;
      for (const dtype of ['float32', 'int32', 'bool'] as const) {
        const xv = values(r, size(shape), dtype);
        for (let axis = -rank; axis < rank; axis++) {
          const dim = shape[axis < 0 ? axis + rank : axis];
          // unordered and repeated indices; scalar, 1-D and 2-D index tensors
          const flat = Array.from({ length: 6 }, () => Math.floor(r() * dim));
          flat[5] = flat[1];
          for (const idxShape of [[], [4], [2, 3]]) {
            const idx = flat.slice(0, size(idxShape));
            await expectSame(() => tf.gather(tf.tensor(xv, shape, dtype), tf.tensor(idx, idxShape, 'int32'), axis));
          }
        }
      }
    });
  }

  it('gathers the merge decoder shape ([800, 256] table, 300 rows) like cpu', async () => {
    const xv = values(r, 800 * 256, 'float32');
    const idx = Array.from({ length: 300 }, () => Math.floor(r() * 800));
    await expectSame(() => tf.gather(tf.tensor2d(xv, [800, 256]), tf.tensor1d(idx, 'int32')));
  });

  it('handles empty indices and empty inner dims', async () => {
    const w = await expectSame(() => tf.gather(tf.tensor2d([1, 2, 3, 4], [2, 2]), tf.tensor1d([], 'int32')));
    expect(w.shape).toEqual([0, 2]);
    await expectSame(() => tf.gather(tf.zeros([3, 0, 2]), tf.tensor1d([2, 0], 'int32')));
    await expectSame(() => tf.gather(tf.zeros([3, 0]), tf.tensor1d([1], 'int32'), 0));
    await expectSame(() => tf.gather(tf.zeros([0, 4]), tf.tensor1d([3, 3], 'int32'), 1));
    await expectSame(() => tf.gather(tf.tensor1d([5, 6, 7]), tf.tensor2d([], [0, 3], 'int32')));
  });

  it('honours batchDims like cpu', async () => {
    const xv = values(r, 2 * 5 * 3, 'float32');
    const idx = [4, 0, 4, 2, 1, 1, 3, 0];
    await expectSame(() => tf.gather(tf.tensor3d(xv, [2, 5, 3]), tf.tensor2d(idx, [2, 4], 'int32'), 1, 1));
    await expectSame(() =>
      tf.gather(
        tf.tensor3d(xv, [2, 5, 3]),
        tf.tensor2d(
          idx.map((i) => i % 3),
          [2, 4],
          'int32',
        ),
        2,
        1,
      ),
    );
  });

  it('casts float indices to int32 like the op does', async () => {
    await expectSame(() => tf.gather(tf.tensor1d([10, 20, 30]), [2, 0, 1]));
  });

  it('throws cpu’s error for an out-of-range index and leaks nothing', async () => {
    const message = async (idx: number[], axis: number) => {
      const before = tf.memory().numTensors;
      const x = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3]);
      const i = tf.tensor1d(idx, 'int32');
      let msg = '';
      try {
        tf.gather(x, i, axis);
      } catch (e) {
        msg = (e as Error).message;
      }
      tf.dispose([x, i]);
      expect(tf.memory().numTensors).toBe(before);
      return msg;
    };
    for (const [idx, axis] of [
      [[0, 2], 0],
      [[-1], 1],
      [[1, 3], 1],
    ] as const) {
      await cpu();
      const c = await message([...idx], axis);
      await wasm();
      const w = await message([...idx], axis);
      expect(c).toMatch(/GatherV2: the index value -?\d+ is not in \[0, \d\]/);
      expect(w).toBe(c);
    }
  });

  it('gradient through gather (axis 0 and 1, repeated indices) equals cpu', async () => {
    const xv = values(r, 6 * 5, 'float32');
    const wv = values(r, 6 * 5 * 2, 'float32');
    for (const [axis, idx] of [
      [0, [5, 1, 1, 0, 5]],
      [1, [4, 0, 4, 2]],
    ] as const) {
      const [c, w] = await onBoth(() => {
        const g = tf.grad((p: tf.Tensor) =>
          tf
            .gather(p, tf.tensor1d([...idx], 'int32'), axis)
            .reshape([-1])
            .mul(tf.tensor1d(wv.slice(0, idx.length * (axis === 0 ? 5 : 6))))
            .sum(),
        );
        return g(tf.tensor2d(xv, [6, 5]));
      });
      expect(w.shape).toEqual(c.shape);
      for (let i = 0; i < c.values.length; i++) expect(w.values[i]).toBeCloseTo(c.values[i], 5);
    }
  });
});

describe('wasm Tile (heap views)', () => {
  const r = rng(9);
  const cases: [number[], number[]][] = [
    [[], []],
    [[1], [5]],
    [[5], [3]],
    [[5], [1]],
    [
      [3, 1],
      [2, 7],
    ],
    [
      [2, 3],
      [3, 2],
    ],
    [
      [2, 3],
      [1, 1],
    ],
    [
      [1, 20],
      [4, 1],
    ],
    [
      [4, 1, 20],
      [1, 34, 1],
    ],
    [
      [3, 1, 2],
      [2, 5, 3],
    ],
    [
      [2, 3, 17],
      [2, 1, 2],
    ],
    [
      [1, 2, 1, 3],
      [3, 1, 4, 1],
    ],
    [
      [2, 1, 2, 1, 3],
      [1, 2, 1, 3, 2],
    ],
    [
      [2, 3],
      [0, 2],
    ],
    [
      [0, 3],
      [4, 2],
    ],
  ];
  for (const [shape, reps] of cases) {
    it(`tile [${shape}] by [${reps}] matches cpu (float32, int32, bool)`, async () => {
      for (const dtype of ['float32', 'int32', 'bool'] as const) {
        const xv = values(r, size(shape), dtype);
        const w = await expectSame(() => tf.tile(tf.tensor(xv, shape, dtype), reps));
        expect(w.shape).toEqual(shape.map((d, i) => d * reps[i]));
      }
    });
  }

  it('tiles image rows like the merge decoder ([8, 1, 256] by [1, 34, 1]) like cpu', async () => {
    const xv = values(r, 8 * 256, 'float32');
    await expectSame(() => tf.tile(tf.tensor3d(xv, [8, 1, 256]), [1, 34, 1]));
  });

  it('gradient through tile equals cpu', async () => {
    const xv = values(r, 3 * 4, 'float32');
    const wv = values(r, 6 * 12, 'float32');
    const [c, w] = await onBoth(() =>
      tf.grad((p: tf.Tensor) =>
        tf
          .tile(p, [2, 3])
          .mul(tf.tensor2d(wv, [6, 12]))
          .sum(),
      )(tf.tensor2d(xv, [3, 4])),
    );
    for (let i = 0; i < c.values.length; i++) expect(w.values[i]).toBeCloseTo(c.values[i], 5);
  });
});
