// Numeric helpers for the kernel tests (test/tf): seeded random inputs, element counts, and a closeness
// check by the worst relative error (relative to max(1, |expected|)).
import { expect } from 'vitest';

/** n values in [-1, 1) from the seeded generator r. */
export function randArray(r: () => number, n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = r() * 2 - 1;
  return a;
}

export function size(shape: number[]): number {
  return shape.reduce((p, d) => p * d, 1);
}

/** Same length, and every element within tol of a's, relative to max(1, |a[i]|); NaN fails. */
export function expectClose(a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-4): void {
  expect(b.length).toBe(a.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(a[i]));
    if (!(d <= worst)) worst = d;
  }
  expect(worst).toBeLessThan(tol);
}
