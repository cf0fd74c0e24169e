import { describe, expect, it } from 'vitest';
import { preprocessBgrMean, preprocessVgg16 } from '../../../src/features/vgg16/preprocess.js';

describe('preprocessVgg16 (keras vgg16.preprocess_input, caffe mode)', () => {
  it('swaps RGB to BGR and subtracts the BGR means, channels-last', () => {
    const rgb = new Uint8Array(224 * 224 * 3);
    rgb.set([255, 0, 10], 0); // pixel 0: R=255 G=0 B=10
    rgb.set([1, 2, 3], 224 * 224 * 3 - 3);
    const x = preprocessVgg16(rgb);
    expect(x.length).toBe(224 * 224 * 3);
    expect([...x.subarray(0, 3)]).toEqual([10 - 103.939, 0 - 116.779, 255 - 123.68].map(Math.fround));
    expect([...x.subarray(x.length - 3)]).toEqual([3 - 103.939, 2 - 116.779, 1 - 123.68].map(Math.fround));
    expect(x[3]).toBe(Math.fround(-103.939));
  });

  it('checks sizes and can write into a given buffer', () => {
    expect(() => preprocessVgg16(new Uint8Array(10))).toThrow(/expected 150528 RGB bytes, got 10/);
    const out = new Float32Array(6);
    expect(preprocessBgrMean(new Uint8Array([0, 0, 0, 255, 255, 255]), 6, out)).toBe(out);
    expect(out[3]).toBeCloseTo(255 - 103.939, 4);
  });
});
