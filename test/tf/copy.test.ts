// Copying between tensors and host arrays (src/tf/copy.ts): copyFloats gives dst.set(src)'s bytes between
// plain and shared arrays with the addon and without it, and refuses unequal lengths; copyInto reads a
// tensor's values straight from the wasm heap (or through dataSync on cpu) into any offset of an array;
// assignFloats gives a variable new values as a new tensor (never in place: test/tf/inplace.test.ts), leaves
// tensors that shared the old data alone, and refuses a wrong size or dtype. Nothing leaks.
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../../src/tf/tf.js';
import { initBackend } from '../../src/tf/backend.js';
import { assignFloats, copyFloats, copyInto } from '../../src/tf/copy.js';
import { addonPath, addonStatus } from '../../src/tf/addon.js';
import { rng } from '../../src/util/random.js';
import { randArray } from '../helpers/arrays.js';
import { addonRequired } from '../helpers/addon.js';

const require = createRequire(import.meta.url);
const status = addonStatus();
const needed = addonRequired();
if (!status.available && !needed)
  console.warn(`test/tf/copy: the native addon is not available here (${status.reason}); only the fallback runs`);
const withAddon = status.available || needed ? it : it.skip;

const shared = (n: number) => new Float32Array(new SharedArrayBuffer(n * 4));
const same = (a: Float32Array, b: Float32Array) =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('copyFloats', () => {
  // by the addon where it loads, else by TypedArray.set: the engine tests' CAPTIONER_NATIVE=0 pass (issue 23) runs that path
  it(`copies plain and shared arrays, views included (${status.available ? 'addon' : 'JS'})`, () => {
    const r = rng(1);
    const src = randArray(r, 1003);
    for (const make of [(n: number) => new Float32Array(n), shared]) {
      const big = make(1010);
      big.fill(7);
      copyFloats(big.subarray(3, 1006), src);
      expect(same(big.subarray(3, 1006), src)).toBe(true);
      expect([big[2], big[1006]]).toEqual([7, 7]); // nothing outside the view
      const back = new Float32Array(1003);
      copyFloats(back, big.subarray(3, 1006));
      expect(same(back, src)).toBe(true);
    }
    copyFloats(new Float32Array(0), new Float32Array(0));
    expect(() => copyFloats(new Float32Array(3), new Float32Array(4))).toThrow(RangeError);
  });

  withAddon('the addon refuses bad arguments', () => {
    const addon = require(addonPath()) as { copy: (...a: unknown[]) => void };
    expect(() => addon.copy(new Float32Array(2), new Float32Array(3))).toThrow(RangeError);
    expect(() => addon.copy(new Float64Array(2), new Float32Array(2))).toThrow(TypeError);
    expect(() => addon.copy(new Float32Array(2))).toThrow(TypeError);
  });
});

for (const backend of ['wasm', 'cpu'] as const) {
  describe(`copyInto and assignFloats on ${backend}`, () => {
    let prev: string | undefined;
    beforeAll(async () => {
      prev = tf.getBackend();
      await initBackend(backend, { quiet: true });
    });
    afterAll(async () => {
      if (prev) await tf.setBackend(prev);
    });

    it("copyInto puts a tensor's values at an offset of a plain or shared array", () => {
      const before = tf.memory().numTensors;
      const values = randArray(rng(2), 24);
      const t = tf.tensor2d(values, [4, 6]);
      const doubled = tf.mul(t, 2); // a kernel's output, not an uploaded array
      for (const out of [new Float32Array(40), shared(40)]) {
        copyInto(t, out, 5);
        expect(same(out.subarray(5, 29), values)).toBe(true);
        expect(out[4]).toBe(0);
        expect(out[29]).toBe(0);
        copyInto(doubled, out, 16);
        expect(same(out.subarray(16, 40), doubled.dataSync() as Float32Array)).toBe(true);
      }
      expect(() => copyInto(t, new Float32Array(30), 7)).toThrow(RangeError);
      expect(() => copyInto(t, new Float32Array(30), -1)).toThrow(RangeError);
      const ints = tf.tensor1d([1, 2], 'int32');
      expect(() => copyInto(ints, new Float32Array(2))).toThrow(TypeError);
      const empty = tf.tensor1d([]);
      copyInto(empty, new Float32Array(0));
      tf.dispose([t, doubled, ints, empty]);
      expect(tf.memory().numTensors).toBe(before);
    });

    it('assignFloats gives a variable new values without touching tensors that shared the old ones', () => {
      const before = tf.memory().numTensors;
      const init = tf.tensor2d([1, 2, 3, 4], [2, 2]);
      const v = tf.variable(init); // shares init's data
      const flat = tf.reshape(v, [4]); // shares it too
      const src = shared(4);
      src.set([5, 6, 7, 8]);
      assignFloats(v, src);
      src.fill(0); // the variable holds a copy
      expect(Array.from(v.dataSync())).toEqual([5, 6, 7, 8]);
      expect(Array.from(init.dataSync())).toEqual([1, 2, 3, 4]);
      expect(Array.from(flat.dataSync())).toEqual([1, 2, 3, 4]);
      expect(() => assignFloats(v, Float32Array.from([9, 9, 9]))).toThrow(RangeError);
      const ints = tf.tidy(() => tf.variable(tf.tensor1d([1, 2], 'int32')));
      expect(() => assignFloats(ints, Float32Array.from([1, 2]))).toThrow(TypeError);
      tf.dispose([init, v, flat, ints]);
      expect(tf.memory().numTensors).toBe(before);
    });
  });
}
