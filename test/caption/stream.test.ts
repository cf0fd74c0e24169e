import { describe, expect, it } from 'vitest';
import { batched, buffered, mapOrdered } from '../../src/caption/stream.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function collect<T>(g: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of g) out.push(x);
  return out;
}

describe('mapOrdered', () => {
  it('keeps input order with out-of-order completion and bounds the calls in flight', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const got = await collect(
      mapOrdered(
        [5, 1, 4, 2, 3, 0, 2],
        async (x) => {
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          await sleep(x * 3);
          inFlight--;
          return x * 10;
        },
        3,
      ),
    );
    expect(got).toEqual([50, 10, 40, 20, 30, 0, 20]);
    expect(maxInFlight).toBe(3);
  });

  it('propagates a failure in order and stops', async () => {
    const g = mapOrdered(
      [1, 2, 3],
      async (x) => {
        if (x === 2) throw new Error('boom');
        return x;
      },
      2,
    );
    await expect(collect(g)).rejects.toThrow('boom');
  });
});

describe('batched', () => {
  it('runs what is ready instead of waiting for a full batch, and surfaces a source failure met meanwhile', async () => {
    const sizes: number[] = [];
    async function* src() {
      yield 1;
      yield 2;
      await sleep(5); // nothing ready: the pending batch [1, 2] runs now
      throw new Error('boom');
    }
    const got: number[] = [];
    const g = batched(
      src(),
      8,
      (x: number) => x,
      async (v: number[]) => (sizes.push(v.length), await sleep(20), v),
      (_x, r) => r as number,
    );
    await expect(
      (async () => {
        for await (const x of g) got.push(x);
      })(),
    ).rejects.toThrow('boom');
    expect(got).toEqual([1, 2]);
    expect(sizes).toEqual([2]);
  });

  it('batches selected items, passes the others through in order', async () => {
    const calls: number[][] = [];
    const items = [1, -1, 2, 3, -2, 4, 5, -3];
    const got = await collect(
      batched(
        items,
        2,
        (x) => (x > 0 ? x : undefined),
        async (xs) => {
          calls.push(xs);
          return xs.map((x) => x * 100);
        },
        (x, r) => (r === undefined ? `skip${x}` : r),
      ),
    );
    expect(got).toEqual([100, 'skip-1', 200, 300, 'skip-2', 400, 500, 'skip-3']);
    expect(calls).toEqual([[1, 2], [3, 4], [5]]);
  });

  it('passes leading unselected items straight through', async () => {
    const got = await collect(
      batched(
        [-1, -2],
        4,
        () => undefined,
        async () => [],
        (x) => x,
      ),
    );
    expect(got).toEqual([-1, -2]);
  });
});

describe('buffered', () => {
  it('reads ahead at most `size` items while the consumer is busy', async () => {
    let produced = 0;
    async function* src() {
      for (let i = 0; i < 10; i++) {
        produced++;
        yield i;
      }
    }
    const g = buffered(src(), 3);
    const first = await g.next();
    expect(first.value).toBe(0);
    await sleep(20);
    // 1 handed out + 3 queued (+1 being pulled at most)
    expect(produced).toBeLessThanOrEqual(5);
    const rest = await collect({ [Symbol.asyncIterator]: () => g });
    expect(rest).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('rethrows an upstream failure after the items before it', async () => {
    async function* src() {
      yield 1;
      yield 2;
      throw new Error('upstream');
    }
    const seen: number[] = [];
    await expect(
      (async () => {
        for await (const x of buffered(src(), 2)) seen.push(x);
      })(),
    ).rejects.toThrow('upstream');
    expect(seen).toEqual([1, 2]);
  });

  it('closes the upstream when the consumer stops early', async () => {
    let closed = false;
    async function* src() {
      try {
        for (let i = 0; ; i++) yield i;
      } finally {
        closed = true;
      }
    }
    for await (const x of buffered(src(), 2)) if (x === 3) break;
    expect(closed).toBe(true);
  });
});
