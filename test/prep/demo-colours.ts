// Test helper: the demo palette colour nearest to an RGB triple (what a rendered pixel "is").
import { DEMO_COLOURS } from '../../src/prep/demo-scene.js';

export function nearestColour(c: ArrayLike<number>): string {
  let best = '';
  let bestD = Infinity;
  for (const [name, rgb] of Object.entries(DEMO_COLOURS)) {
    const d = Math.hypot(c[0] - rgb[0], c[1] - rgb[1], c[2] - rgb[2]);
    if (d < bestD) [best, bestD] = [name, d];
  }
  return best;
}
