// The serial part of a data-parallel step (src/train/parallel/update.ts): with the native addon, the
// gradient reduction and Adam give flat.ts's loops' results to float tolerance, on shared memory as the
// workers use it, for 1 to 3 regions and unaligned ranges; repeated runs give the same bytes; and a
// range outside the arrays is an error, not a stray write. Without the addon update.ts is flat.ts itself.
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { addonPath, nativeStatus } from '../../../src/tf/native.js';
import { BLOCK, adamRange, reduceRange, type AdamHyper } from '../../../src/train/parallel/flat.js';
import { applyAdam, reduceGradients } from '../../../src/train/parallel/update.js';
import { rng } from '../../../src/util/random.js';
import { expectClose, randArray } from '../../helpers/arrays.js';

const require = createRequire(import.meta.url);
const status = nativeStatus();
const needed = process.env.CI === 'true';
if (!status.available && !needed) console.warn(`test/train/parallel/update: the native addon is not available here (${status.reason}); only the fallback runs`);
const withAddon = status.available || needed ? it : it.skip;

const shared = (a: Float32Array) => {
  const s = new Float32Array(new SharedArrayBuffer(a.length * 4));
  s.set(a);
  return s;
};

/** Byte equality of two float arrays (vitest's toEqual walks 100,000s of elements slowly). */
const same = (a: Float32Array | Float64Array, b: Float32Array | Float64Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

/** update.ts as it runs here (with the addon), or flat.ts's loop, which it runs where the addon is not loaded. */
const reduceBy = (addon: boolean, ...a: Parameters<typeof reduceGradients>) => (addon ? reduceGradients(...a) : reduceRange(...a));
const adamBy = (addon: boolean, ...a: Parameters<typeof applyAdam>) => (addon ? applyAdam(...a) : adamRange(...a));

describe('update.ts', () => {
  const total = 2 * BLOCK + 123;
  const r = rng(9);
  const regions = randArray(r, 3 * total);

  withAddon('reduceGradients sums the regions in order and gives the blockwise squares of flat.ts', () => {
    expect(status.available).toBe(true);
    for (const parts of [1, 2, 3]) {
      for (const [from, to] of [[0, total], [BLOCK, total], [0, BLOCK + 7]]) {
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

  withAddon('applyAdam updates weights and moments in place as flat.ts does, only inside the range', () => {
    const h: AdamHyper = { learningRate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-7, clipNorm: 1 };
    const n = 5000;
    const init = [randArray(r, n), randArray(r, n).map((x) => x * 0.1), randArray(r, n).map((x) => Math.abs(x) * 0.01), randArray(r, n)];
    const both = [true, false].map((on) => {
      const [w, m, v, g] = init.map(shared);
      for (let t = 1; t <= 3; t++) adamBy(on, h, w, m, v, g, 100, 4000, 0.5, 0.001 * t);
      return [w, m, v];
    });
    both[0].forEach((a, i) => expectClose(a, both[1][i], 1e-5));
    expect(same(both[0][0].subarray(0, 100), init[0].subarray(0, 100))).toBe(true);
    expect(same(both[0][0].subarray(4000), init[0].subarray(4000))).toBe(true);
  });

  withAddon('ranges outside the arrays are RangeErrors; wrong array types are TypeErrors', () => {
    const addon = require(addonPath()) as { reduceBlocks: (...a: unknown[]) => void; adamArrays: (...a: unknown[]) => void };
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
