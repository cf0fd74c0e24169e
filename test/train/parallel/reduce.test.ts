// The data-parallel gradient reduction (src/train/parallel/reduce.ts): with the native addon, reduceGradients
// gives reduceLoop's (the reference's) results to float tolerance, on shared memory as the workers use it, for
// 1 to 3 regions and unaligned ranges; repeated runs give the same bytes; without the addon it is reduceLoop
// itself; and the addon refuses a range outside the arrays instead of writing stray memory. (Adam's host
// loop against its reference: test/train/adam.test.ts.)
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { addonPath, addonStatus } from '../../../src/tf/addon.js';
import { BLOCK } from '../../../src/train/parallel/flat.js';
import { normOf, reduceGradients, reduceLoop } from '../../../src/train/parallel/reduce.js';
import { rng } from '../../../src/util/random.js';
import { expectClose, randArray } from '../../helpers/arrays.js';
import { addonRequired } from '../../helpers/addon.js';

const require = createRequire(import.meta.url);
const status = addonStatus();
const needed = addonRequired();
if (!status.available && !needed)
  console.warn(
    `test/train/parallel/reduce: the native addon is not available here (${status.reason}); only the fallback runs`,
  );
const withAddon = status.available || needed ? it : it.skip;

const shared = (a: Float32Array) => {
  const s = new Float32Array(new SharedArrayBuffer(a.length * 4));
  s.set(a);
  return s;
};

/** Byte equality of two float arrays (vitest's toEqual walks 100,000s of elements slowly). */
const same = (a: Float32Array | Float64Array, b: Float32Array | Float64Array) =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

/** reduce.ts as it runs here (with the addon), or the reference loop, which it runs where the addon is not loaded. */
const reduceBy = (addon: boolean, ...a: Parameters<typeof reduceGradients>) =>
  addon ? reduceGradients(...a) : reduceLoop(...a);

describe('reduce.ts', () => {
  const total = 2 * BLOCK + 123;
  const r = rng(9);
  const regions = randArray(r, 3 * total);

  withAddon('reduceGradients sums the regions in order and gives the blockwise squares of reduceLoop', () => {
    expect(status.available).toBe(true);
    for (const parts of [1, 2, 3]) {
      for (const [from, to] of [
        [0, total],
        [BLOCK, total],
        [0, BLOCK + 7],
      ]) {
        const a = shared(regions);
        const b = shared(regions);
        const fast = reduceBy(true, a, total, parts, from, to);
        const slow = reduceBy(false, b, total, parts, from, to);
        expect(fast).toHaveLength(Math.ceil((to - from) / BLOCK));
        expectClose(fast, slow, 1e-9);
        expectClose(a.subarray(0, total), b.subarray(0, total), 1e-6);
        expect(same(a.subarray(total), b.subarray(total))).toBe(true); // the other regions are read, not written
        const again = shared(regions);
        expect(same(reduceBy(true, again, total, parts, from, to), fast)).toBe(true); // same bytes
      }
    }
  });

  it(`${status.available ? 'with' : 'without'} the addon reduceGradients gives reduceLoop's bytes${status.available ? ' to float tolerance' : ''}; normOf adds the blocks in order`, () => {
    // without the addon (CAPTIONER_NATIVE=0: CI's second pass over the engine tests) it is reduceLoop itself
    for (const parts of [1, 2, 3]) {
      const a = shared(regions);
      const b = shared(regions);
      const got = reduceGradients(a, total, parts, 0, total);
      const want = reduceLoop(b, total, parts, 0, total);
      if (status.available) {
        expectClose(got, want, 1e-9);
        expectClose(a, b, 1e-6);
      } else {
        expect(same(got, want)).toBe(true);
        expect(same(a, b)).toBe(true);
      }
    }
    // the sum of region 0 and 1 by hand, and its norm
    const g = Float32Array.from([3, 0, 1, 4]);
    const sums = reduceLoop(g, 2, 2, 0, 2);
    expect(Array.from(g.subarray(0, 2))).toEqual([4, 4]);
    expect(normOf(sums)).toBeCloseTo(Math.sqrt(32), 12);
  });

  withAddon('ranges outside the arrays are RangeErrors; wrong array types are TypeErrors', () => {
    const addon = require(addonPath()) as {
      reduceBlocks: (...a: unknown[]) => void;
      adamArrays: (...a: unknown[]) => void;
    };
    const g = new Float32Array(10);
    const sums = new Float64Array(4);
    expect(() => addon.reduceBlocks(g, 5, 3, 0, 5, 4, sums)).toThrow(RangeError); // 3 regions of 5 > 10
    expect(() => addon.reduceBlocks(g, 5, 2, 0, 6, 4, sums)).toThrow(RangeError); // past the region
    expect(() => addon.reduceBlocks(g, 5, 2, 0, 5, 1, new Float64Array(2))).toThrow(RangeError); // 5 blocks, 2 sums
    expect(() => addon.reduceBlocks(new Float64Array(10), 5, 2, 0, 5, 4, sums)).toThrow(TypeError);
    expect(() => addon.adamArrays(g, g, g, new Float32Array(3), 0, 5, 1, 0.9, 0.999, 0.1, 1e-7)).toThrow(RangeError);
    expect(() => addon.adamArrays(g, g, g, g, 4, 2, 1, 0.9, 0.999, 0.1, 1e-7)).toThrow(RangeError);
  });
});
